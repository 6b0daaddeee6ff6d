from balancer.engines.builtin.process import main

main()
