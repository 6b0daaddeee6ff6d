"""An edit of the saved configuration as one value: what it does to a configuration, and what
the audit trail, the revision's message and the WebUI's "Saved: ..." call it.

The API, the WebUI (and so the command line, which speaks to the API) and the controller's
drain, halt and online make their edits here and save them with ``Controller.save``, so an
edit is worded once (``balancer.words``) and audited the same wherever it was made. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from balancer import configuration, words
from balancer.model import Config, RealServerState
from balancer.presets import psm
from balancer.store import parse_backup


@dataclass(frozen=True, slots=True)
class Edit:
    action: str  # the audit trail's: add, modify, remove, preset, drain, halt, online
    target: str  # what it edits: "CyberArk-PSM", "CyberArk-PSM/PSM2"
    message: str  # the revision's and the audit trail's: "modify real server CyberArk-PSM/PSM2"
    done: str  # the WebUI's "Saved: ...": "real server PSM2 of CyberArk-PSM modified"
    change: Callable[[Config], Config] = field(repr=False, compare=False)

    def apply(self, config: Config) -> Config:
        """``config`` edited and checked; raises Invalid or configuration.Missing."""
        return self.change(config)

    @classmethod
    def add_virtual_service(cls, data: Any) -> Edit:
        label = _label(data)
        servers = data.get("real_servers") if isinstance(data, dict) else None
        named = [_label(server) for server in servers] if isinstance(servers, list) else []
        return cls(
            "add",
            label,
            words.edited("add", label),
            words.done("add", label, servers=named),
            partial(configuration.add_virtual_service, data=data),
        )

    @classmethod
    def modify_virtual_service(cls, label: str, changes: Any) -> Edit:
        # Said by the label it has after the edit: a renamed service is found by its new one.
        renamed = _label(changes) or label
        return cls(
            "modify",
            label,
            words.edited("modify", label),
            words.done("modify", renamed),
            partial(configuration.modify_virtual_service, label=label, changes=changes),
        )

    @classmethod
    def remove_virtual_service(cls, label: str) -> Edit:
        return cls(
            "remove",
            label,
            words.edited("remove", label),
            words.done("remove", label),
            partial(configuration.remove_virtual_service, label=label),
        )

    @classmethod
    def add_real_server(cls, service: str, data: Any) -> Edit:
        server = _label(data)
        return cls(
            "add",
            f"{service}/{server}",
            words.edited("add", service, server),
            words.done("add", service, server),
            partial(configuration.add_real_server, service=service, data=data),
        )

    @classmethod
    def modify_real_server(cls, service: str, server: str, changes: Any) -> Edit:
        return cls(
            "modify",
            f"{service}/{server}",
            words.edited("modify", service, server),
            words.done("modify", service, _label(changes) or server),
            partial(
                configuration.modify_real_server, service=service, label=server, changes=changes
            ),
        )

    @classmethod
    def remove_real_server(cls, service: str, server: str) -> Edit:
        return cls(
            "remove",
            f"{service}/{server}",
            words.edited("remove", service, server),
            words.done("remove", service, server),
            partial(configuration.remove_real_server, service=service, label=server),
        )

    @classmethod
    def set_state(cls, service: str, server: str, state: RealServerState) -> Edit:
        """Drain, halt or bring online: audited by the state's own name."""
        return cls(
            state.value,
            f"{service}/{server}",
            words.edited(state.value, service, server),
            words.done(state.value, service, server),
            partial(
                configuration.modify_real_server,
                service=service,
                label=server,
                changes={"state": state.value},
            ),
        )

    @classmethod
    def restore(cls, document: Any) -> Edit:
        """The configuration of a backup document (``Store.export``'s) instead of the saved one."""
        source = document.get("revision") if isinstance(document, dict) else None
        message = words.restored(source)
        return cls(
            "restore", "", message, f"the configuration {message}", partial(_backup, document)
        )

    @classmethod
    def psm_preset(cls, **arguments: Any) -> Edit:
        """The guide's two PSM services; ``arguments`` as ``presets.psm.psm_services`` takes."""
        servers = [str(label) for label, _ in arguments.get("servers", ())]
        return cls(
            "preset",
            "psm",
            f"add {words.PSM_PRESET}",
            words.preset_done(servers),
            partial(psm.add_psm, **arguments),
        )


def _backup(document: Any, config: Config) -> Config:
    """A restore replaces whatever is saved."""
    return parse_backup(document)


def _label(data: Any) -> str:
    label = data.get("label") if isinstance(data, dict) else None
    return str(label) if label is not None else ""
