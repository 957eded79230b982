"""The provisioned devices, over the inventory: list them, show one, revoke one.

Revoking removes the device's account and certificate files from the site broker
(`Broker.revoke`) and makes a running mosquitto reload, which also drops the device's open
session; from then on the broker refuses it ("not authorised"), whatever the board still holds.
The row stays in the inventory, marked revoked, with who did it and when.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firelink.site import pki
from firelink.site.broker import Broker, ReloadOutcome
from firelink.site.inventory import ACTIVE, REVOKED, DeviceRecord, HistoryEntry, Inventory


@dataclass(frozen=True)
class RevokeOutcome:
    record: DeviceRecord
    had_account: bool  # the broker knew the account (False: it was already gone)
    was_revoked: bool  # the inventory already said revoked
    reload: ReloadOutcome

    @property
    def locked_out(self) -> bool:
        """The broker refuses the device now (not only at its next restart)."""
        return self.reload.reloaded


def list_devices(inventory: Inventory, state: str | None = None, site: str | None = None) -> list[DeviceRecord]:
    return inventory.devices(state=state, site=site)


def show(inventory: Inventory, device_id: str) -> tuple[DeviceRecord, list[HistoryEntry]]:
    """The device's row (UnknownDevice if absent) and its history, oldest first."""
    return inventory.get(device_id), inventory.history(device_id)


def revoke(inventory: Inventory, broker: Broker, device_id: str, by: str) -> RevokeOutcome:
    """Locks the device out of the broker and marks it revoked. Safe to repeat."""
    before = inventory.get(device_id)
    had = broker.revoke(device_id)
    reload = broker.last_reload
    how = (f"mosquitto reloaded (pid {', '.join(map(str, reload.signalled))})" if reload.signalled
           else "no running mosquitto found: refused from its next start")
    detail = (f"broker account {'removed' if had else 'was already absent'}; {how}; {broker.last_withdrawn}; "
              f"{broker.last_kick or 'no live connection closed'}; {broker.last_revoke_marker}")
    record = inventory.mark_revoked(device_id, by, detail)
    return RevokeOutcome(record, had, before.state == REVOKED, reload)


def renewals_due(inventory: Inventory, days: float = pki.RENEW_DAYS) -> list[tuple[DeviceRecord, float]]:
    """Active devices whose certificate ends within `days` (or has ended), soonest first. Renewal
    is provisioning the board again (`firelink provision`): a new certificate, the old one refused."""
    return renewals_due_of(inventory.devices(state=ACTIVE), days)


def renewals_due_of(records: list[DeviceRecord], days: float = pki.RENEW_DAYS) -> list[tuple[DeviceRecord, float]]:
    due = [(r, left) for r in records if r.state == ACTIVE
           for left in [r.cert_days_left()] if left is not None and left <= days]
    return sorted(due, key=lambda d: d[1])


def as_dict(rec: DeviceRecord) -> dict[str, Any]:
    """A record for JSON output."""
    return {k: getattr(rec, k) for k in rec.__dataclass_fields__}
