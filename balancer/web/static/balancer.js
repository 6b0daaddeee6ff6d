// The WebUI's one script besides htmx: say so when the appliance cannot be reached, and stop
// saying so once it answers again. (A file, not inline: the Content-Security-Policy forbids
// inline script.)
(function () {
  "use strict";

  function unreachable(shown) {
    var banner = document.getElementById("unreachable");
    if (banner) {
      banner.hidden = !shown;
    }
  }

  document.addEventListener("htmx:sendError", function () {
    unreachable(true);
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) {
      unreachable(false);
    }
  });
})();
