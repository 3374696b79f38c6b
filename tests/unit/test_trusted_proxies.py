"""X-Forwarded-* headers count only from a trusted proxy's address (``DJANGO_TRUSTED_PROXY_NETS``),
and the compose deployment lets clients in through its proxy only: a client connecting to gunicorn
directly wrote the rightmost X-Forwarded-For itself (every limit escaped, someone else locked out,
/metrics read as 127.0.0.1) and X-Forwarded-Proto skipped the HTTPS redirect."""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import yaml
from django.test import override_settings

from recsite import client_address as client_address_module
from recsite.client_address import client_address, forwarded_headers_middleware

ROOT = Path(__file__).resolve().parents[2]
DIRECT = "192.0.2.2"  # a client on the internet, connected to gunicorn itself
PROXY = "172.30.255.2"  # the proxy, on compose's network "edge"
EDGE = (ipaddress.ip_network("172.30.255.0/28"),)  # DJANGO_TRUSTED_PROXY_NETS as compose sets it


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())


def _compose_value(value: str, env: dict[str, str] | None = None) -> str:
    """What compose makes of "${NAME:-default}" (defaults may nest: "${A:-${B:-x}}") in ``env``
    (none set by default): innermost first."""
    env = env or {}
    while (m := re.search(r"\$\{([A-Z_]+):-([^${}]*)\}", value)):
        value = value[:m.start()] + (env.get(m[1]) or m[2]) + value[m.end():]
    return value


def _compose_default(value: str) -> str:
    """What compose makes of "${NAME:-default}" with NAME unset."""
    return _compose_value(value)


@override_settings(TRUSTED_PROXIES=1)
def test_by_default_only_a_proxy_on_this_host_may_name_the_client(rf):
    """The default trusted every private range: any peer on a shared 10/8 (a cloud VPC, an office
    LAN) could send X-Forwarded-For naming someone else's address and lock them out."""
    from django.conf import settings

    assert [str(net) for net in settings.TRUSTED_PROXY_NETS] == ["127.0.0.0/8", "::1/128"]
    for neighbour in ("10.1.2.3", "172.18.0.5", "192.168.1.20", "fd00::7"):
        assert client_address(rf.get("/", REMOTE_ADDR=neighbour, HTTP_X_FORWARDED_FOR="203.0.113.9")) == neighbour
    assert client_address(rf.get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")) == "203.0.113.9"


@override_settings(TRUSTED_PROXIES=1, TRUSTED_PROXY_NETS=EDGE)
def test_only_a_peer_in_the_proxy_networks_may_name_the_client(rf):
    def address(peer: str, forwarded: str) -> str:
        return client_address(rf.get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded))

    assert address(PROXY, "203.0.113.9") == "203.0.113.9"
    assert address("172.18.0.5", "203.0.113.9") == "172.18.0.5"  # another container: not the proxy
    assert address(f"::ffff:{PROXY}", "203.0.113.9") == "203.0.113.9"  # IPv4 peer on an IPv6 socket
    assert address(DIRECT, "203.0.113.9") == DIRECT
    assert address(DIRECT, "127.0.0.1") == DIRECT
    with override_settings(TRUSTED_PROXY_NETS=()):
        assert address(PROXY, "203.0.113.9") == PROXY


@override_settings(TRUSTED_PROXIES=1)
def test_a_proxy_on_a_unix_socket_counts_as_loopback(rf):
    """gunicorn bound to a Unix socket (a common nginx setup) gives REMOTE_ADDR ''; it was no
    address, so no proxy: every client became '' (one lockout and one search budget for all) and
    X-Forwarded-Proto was dropped (an HTTPS redirect loop). Only local processes reach a socket."""
    request = rf.get("/", REMOTE_ADDR="", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert client_address(request) == "203.0.113.9"
    with override_settings(TRUSTED_PROXY_NETS=(ipaddress.ip_network("172.18.0.0/16"),)):  # no loopback
        assert client_address(request) == ""


@override_settings(TRUSTED_PROXIES=1, TRUSTED_PROXY_NETS=EDGE)
def test_forwarded_headers_of_a_direct_client_are_dropped_before_anyone_reads_them(rf):
    seen = forwarded_headers_middleware(lambda request: request.META)
    direct = seen(rf.get("/", REMOTE_ADDR=DIRECT, HTTP_X_FORWARDED_FOR="10.1.2.3", HTTP_X_FORWARDED_PROTO="https",
                         HTTP_X_FORWARDED_HOST="evil.example"))
    assert not [name for name in direct if name.startswith("HTTP_X_FORWARDED_")]
    proxied = seen(rf.get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="10.1.2.3", HTTP_X_FORWARDED_PROTO="https"))
    assert proxied["HTTP_X_FORWARDED_FOR"] == "10.1.2.3" and proxied["HTTP_X_FORWARDED_PROTO"] == "https"


@override_settings(TRUSTED_PROXIES=1, TRUSTED_PROXY_NETS=EDGE)
def test_the_middlewares_decision_is_the_one_client_address_uses(rf, monkeypatch):
    """The middleware decides once per request whether its peer is a trusted proxy; the lockout
    and the throttles, asking for the client's address several times a request, use that answer."""
    seen = forwarded_headers_middleware(lambda request: request)
    proxied = seen(rf.get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.9"))
    direct = seen(rf.get("/", REMOTE_ADDR=DIRECT, HTTP_X_FORWARDED_FOR="203.0.113.9"))

    def decided_again(request):
        raise AssertionError("the peer was checked again")

    monkeypatch.setattr(client_address_module, "from_trusted_proxy", decided_again)
    assert [client_address(proxied), client_address(direct)] == ["203.0.113.9", DIRECT]


@override_settings(TRUSTED_PROXIES=1, METRICS_TOKEN="")
def test_a_direct_client_cannot_read_metrics_as_loopback(client):
    assert client.get("/metrics", REMOTE_ADDR=DIRECT, HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 200


@override_settings(TRUSTED_PROXIES=1, TRUSTED_PROXY_NETS=EDGE, METRICS_TOKEN="", SECURE_SSL_REDIRECT=True,
                   SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_a_direct_client_cannot_pass_as_https(client):
    direct = client.get("/metrics", REMOTE_ADDR=DIRECT, HTTP_X_FORWARDED_PROTO="https")
    assert direct.status_code == 301 and direct["Location"].startswith("https://")
    proxied = client.get("/metrics", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_PROTO="https",
                         HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert proxied.status_code == 200


def test_compose_lets_clients_in_through_its_proxy_only():
    compose = _compose()
    services = compose["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert "web" not in published, "gunicorn published: clients could write the X-Forwarded-* it trusts"
    assert compose["x-app-env"]["DJANGO_TRUSTED_PROXIES"].endswith(":-1}")  # one proxy: this one
    proxy = services["proxy"]
    assert proxy["image"].startswith("caddy:") and "web:8000" in proxy["command"]
    assert {"80:80", "443:443"} <= set(proxy["ports"])


def test_compose_trusts_forwarded_headers_from_its_proxy_alone():
    """The site trusts loopback only by default; compose names its Caddy by the fixed address it
    has on a network of its own (holding the proxy and web and nothing else). The whole subnet was
    trusted once: it holds Docker's gateway, the address a process on the host connecting to web's
    edge address comes from, which could then name any client."""
    compose = _compose()
    trusted = ipaddress.ip_network(_compose_default(compose["x-app-env"]["DJANGO_TRUSTED_PROXY_NETS"]))
    edge = [ipaddress.ip_network(_compose_default(c["subnet"])) for c in compose["networks"]["edge"]["ipam"]["config"]]
    proxy_address = _compose_default(compose["services"]["proxy"]["networks"]["edge"]["ipv4_address"])
    assert edge == list(EDGE) and proxy_address == PROXY
    assert trusted == ipaddress.ip_network(f"{PROXY}/32") and trusted.subnet_of(edge[0])
    gateway = next(edge[0].hosts())  # Docker gives a network's gateway its first address
    assert gateway not in trusted
    on_edge = {name for name, s in compose["services"].items() if "edge" in (s.get("networks") or [])}
    assert on_edge == {"proxy", "web"}
    assert list(compose["services"]["proxy"]["networks"]) == ["edge"]  # it reaches web through edge only


def test_compose_takes_trusted_proxy_nets_from_the_environment_first():
    """Pinned to EDGE_SUBNET, a DJANGO_TRUSTED_PROXY_NETS in .env was ignored, and README's "proxy
    of your own" recipe (web published on loopback, that variable set) had no effect."""
    value = _compose()["x-app-env"]["DJANGO_TRUSTED_PROXY_NETS"]
    assert _compose_value(value, {"DJANGO_TRUSTED_PROXY_NETS": "172.18.0.1/32",
                                  "EDGE_SUBNET": "10.9.0.0/28"}) == "172.18.0.1/32"
    assert _compose_value(value, {"EDGE_PROXY_ADDRESS": "10.9.0.2"}) == "10.9.0.2/32"  # the proxy's own
    assert _compose_value(value) == f"{PROXY}/32"


def test_compose_publishes_nothing_but_the_proxy_beyond_the_host():
    """Airflow's UI was published on every interface (it runs any DAG and shows every connection):
    an operator reaches it on the host itself or through a tunnel."""
    services = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        if name == "proxy":
            continue
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host"


def _gunicorn_scheme(words: list[str], peer: str) -> str:
    """The scheme gunicorn, run with these command-line words (and the config file they name), gives
    a plain-HTTP request from ``peer`` that says ``X-Forwarded-Proto: https`` (Django takes it for
    HTTPS when no SECURE_PROXY_SSL_HEADER is set)."""
    from gunicorn.http.message import Request
    from gunicorn.http.unreader import IterUnreader

    from tests.unit.test_gunicorn_config import gunicorn_config

    raw = b"GET / HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-Proto: https\r\n\r\n"
    return Request(gunicorn_config(words), IterUnreader([raw]), (peer, 40000), 1).scheme


def test_gunicorn_takes_nobodys_forwarded_proto_for_https(monkeypatch, tmp_path):
    """gunicorn trusted X-Forwarded-Proto from 127.0.0.1 by default (forwarded_allow_ips): with
    DJANGO_TRUSTED_PROXIES=0 a request from this host saying "https" skipped the HTTPS redirect.
    Only the site decides (SECURE_PROXY_SSL_HEADER, from a trusted proxy's address). The image's
    own CMD had the default still."""
    from tests.unit.test_gunicorn_config import all_words

    assert _gunicorn_scheme(["recsite.wsgi"], "127.0.0.1") == "https"  # gunicorn's default, what we turn off
    for where, words in all_words(monkeypatch, tmp_path).items():
        assert _gunicorn_scheme(words, "127.0.0.1") == "http", where
        assert _gunicorn_scheme(words, PROXY) == "http", where  # compose's Caddy: the site reads its header
