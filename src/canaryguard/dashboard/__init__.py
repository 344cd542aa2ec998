"""The web dashboard: static pages at ``/`` that read and change everything through the REST API
with the token the person signs in with (the pages themselves hold no data and need no token)."""

from canaryguard.dashboard._pages import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, mount_dashboard

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "mount_dashboard"]
