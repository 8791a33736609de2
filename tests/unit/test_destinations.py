"""Where webhooks may POST (arqond/core/destinations.py), as a table: registration (addresses
not yet resolved) and delivery (the addresses a name resolves to)."""

from __future__ import annotations

from ipaddress import ip_address
from urllib.parse import urlsplit

import pytest

from arqond.core.destinations import check_entries, refusal

NOT_LISTED = "is not in webhooks.allowed_destinations; an administrator must list it"
INSIDE = ("is a loopback, private or link-local destination; it must be listed exactly (no "
          "wildcard) or by network in webhooks.allowed_destinations")


@pytest.mark.parametrize("url, resolved, allowed, problem", [
    # Nothing listed: nowhere.
    ("https://hooks.example.com/", [], [], f"https://hooks.example.com:443 {NOT_LISTED}"),
    # Origins: scheme, host and port must match; no port in a pattern means the default.
    ("https://hooks.example.com/a", [], ["https://hooks.example.com"], None),
    ("https://hooks.example.com:8443/a", [], ["https://hooks.example.com"],
     f"https://hooks.example.com:8443 {NOT_LISTED}"),
    ("http://hooks.example.com/a", [], ["https://hooks.example.com"],
     f"http://hooks.example.com:80 {NOT_LISTED}"),
    ("https://a.example.com/", [], ["https://*.example.com"], None),
    ("https://a.example.com:9/", [], ["https://*.example.com:*"], None),
    # The inside: only by exact name or by network.
    ("http://127.0.0.1:8000/", [], ["http://*:*"], f"http://127.0.0.1:8000 {INSIDE}"),
    ("http://127.0.0.1:8000/", [], ["http://127.0.0.1:*"], None),
    ("http://127.0.0.1:8000/", [], ["http://127.0.0.1:8000"], None),
    ("http://169.254.169.254/", [], ["http://*"], f"http://169.254.169.254:80 {INSIDE}"),
    ("http://10.1.2.3/", [], ["10.1.0.0/16"], None),
    ("http://10.2.0.1/", [], ["10.1.0.0/16"], f"http://10.2.0.1:80 {NOT_LISTED}"),
    ("http://localhost:9/", [], ["http://*:*"], f"http://localhost:9 {INSIDE}"),
    ("http://a.localhost:9/", [], ["http://*:*"], f"http://a.localhost:9 {INSIDE}"),
    ("http://[::1]:9000/", [], ["http://[::1]:9000"], None),
    ("http://[::1]:9001/", [], ["http://[::1]:9000"], f"http://[::1]:9001 {NOT_LISTED}"),
    ("http://[fe80::1]:80/", [], ["http://*"], f"http://[fe80::1]:80 {INSIDE}"),
    # At delivery, what a name resolves to is checked too (a name re-pointed inside).
    ("https://a.example.com/", [ip_address("93.184.216.34")], ["https://*.example.com"], None),
    ("https://a.example.com/", [ip_address("10.0.0.5")], ["https://*.example.com"],
     f"https://a.example.com:443 {INSIDE}"),
    ("https://a.example.com/", [ip_address("93.184.216.34"), ip_address("127.0.0.1")],
     ["https://*.example.com"], f"https://a.example.com:443 {INSIDE}"),
    ("https://a.example.com/", [ip_address("10.0.0.5")],
     ["https://*.example.com", "10.0.0.0/8"], None),
    ("https://a.example.com/", [ip_address("10.0.0.5")], ["https://a.example.com"], None),
    ("http://224.0.0.1/", [], ["http://*"], f"http://224.0.0.1:80 {INSIDE}"),
])
def test_where_a_webhook_may_post(url, resolved, allowed, problem):
    assert refusal(urlsplit(url), resolved, allowed) == problem


@pytest.mark.parametrize("entries, complaint", [
    (["https://*.example.com", "10.0.0.0/8", "fd00::/8"], None),
    (["example.com"], "'example.com' is neither scheme://host:port nor a network such as "
     "10.0.0.0/8"),
])
def test_the_allow_list_is_checked_when_the_configuration_is_read(entries, complaint):
    assert check_entries(entries) == complaint
