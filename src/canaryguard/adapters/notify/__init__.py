"""Notifiers: where alerts leave canaryguard (the engine's ``Notifier`` port).

``WebhookNotifier`` (signed CloudEvents), ``SlackNotifier`` (an incoming webhook) and
``EmailNotifier`` (SMTP) each make one attempt per ``send`` and raise ``DeliveryFailed`` when it
fails, ``permanent`` when trying again cannot help: retrying is the engine's job.
``load_channels`` builds them, with the rule of which alerts each wants, from a TOML file.
"""

from __future__ import annotations

from canaryguard.adapters.notify.config import load_channels
from canaryguard.adapters.notify.email import EmailNotifier
from canaryguard.adapters.notify.slack import SlackNotifier
from canaryguard.adapters.notify.webhook import WebhookNotifier

__all__ = ["EmailNotifier", "SlackNotifier", "WebhookNotifier", "load_channels"]
