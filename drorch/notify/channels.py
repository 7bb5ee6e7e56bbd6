"""Where notices go: the `notify:` entries of the policy, each a channel with
its own severity threshold, reminder interval and rate limit."""

from __future__ import annotations

from dataclasses import dataclass

from drorch.errors import DrorchError
from drorch.notify.findings import Notice
from drorch.policy.types import Secret


class DeliveryError(DrorchError):
    """A notice could not be delivered (the message never holds a secret)."""


@dataclass
class Channel:
    name: str
    model: object  # the policy entry (WebhookChannel | EmailChannel)

    @property
    def min_severity(self) -> str:
        return self.model.min_severity

    @property
    def repeat(self) -> float:
        return self.model.repeat.total_seconds()

    @property
    def max_per_hour(self) -> int:
        return self.model.max_per_hour

    @property
    def daily_report(self) -> bool:
        return self.model.daily_report

    def send(self, notice: Notice) -> None:
        secrets: list[str] = []
        try:
            if self.model.type == "webhook":
                from drorch.notify.webhook import post

                url = resolve(self.model.url, secrets)
                post(url, notice.payload(), self.model.timeout.total_seconds())
            else:
                from drorch.notify.mail import send_mail

                password = resolve(self.model.password, secrets) if self.model.password else None
                send_mail(self.model, password, notice)
        except DrorchError as exc:
            raise DeliveryError(f"{self.name}: {redact(exc.message, secrets)}", exc.hint) from None
        except Exception as exc:  # noqa: BLE001 - anything a library raises: said without secrets
            raise DeliveryError(f"{self.name}: {redact(f'{type(exc).__name__}: {exc}', secrets)}") from None


def resolve(value, secrets: list[str]) -> str:
    text = value.resolve() if isinstance(value, Secret) else value
    if isinstance(value, Secret):
        secrets.append(text)
    return text


def redact(message: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def make_channels(models: list) -> list[Channel]:
    """One Channel per `notify:` entry, named by `name:` or type#position."""
    out, counts = [], {}
    for model in models:
        counts[model.type] = counts.get(model.type, 0) + 1
        out.append(Channel(model.name or f"{model.type}#{counts[model.type]}", model))
    return out
