"""Hostile input in every form and API field: a clear 4xx (or a harmless 200 where the input is
just text to search for), nothing published to Kafka, nothing stored in MongoDB or Django, and
no traceback or internals in the answer.

The catalog is real and non-empty, so an operator that slipped through would show: ``{"$gt": ""}``
or ``{"$ne": null}`` as a MongoDB filter would match every product, not none.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

HUGE = "A" * (1 << 20)  # 1 MB
OPERATORS = ['{"$gt": ""}', '{"$ne": null}', '{"$where": "sleep(5000)"}', '{"$regex": ".*"}']
XSS = '<script>alert("x")</script>'
LEAKS = ["Traceback", 'File "/', "/work/", "site-packages", "pymongo", "kafka.errors", "OperationalError",
         "Exception Value", "DEBUG = True", "SECRET_KEY"]
PRODUCT = "__product__"  # replaced by a real product id at run time
OTHER_USER = "__other_user__"  # replaced by another account's recommender id


UNSET = object()


@dataclass
class Case:
    id: str
    method: str
    url: str
    data: Any = None
    json_body: Any = UNSET
    raw_body: bytes | None = None
    content_type: str | None = None
    login: bool = False
    ok: tuple[int, ...] = (400,)  # acceptable status codes
    check: Callable[[str], None] | None = None  # extra check of the body
    headers: dict[str, str] = field(default_factory=dict)


def _no_results(body: str) -> None:
    assert "No products found." in body and "0 products" in body


def _literal_text(body: str) -> None:
    """An operator-looking query is plain text: it finds what its words find (a review may say
    "gt"), never the whole catalog as an operator would."""
    from core import catalog

    shown = re.search(r"([\d,]+) products · page", body)
    assert shown, "no result count on the page"
    assert int(shown.group(1).replace(",", "")) < catalog.list_products(page=1, per_page=1)[1]


def _listing(body: str) -> None:
    assert 'id="products"' in body and "No products found." not in body


CASES: list[Case] = []


def case(*args, **kwargs) -> None:
    CASES.append(Case(*args, **kwargs))


# --- sign-up --------------------------------------------------------------------------------------
SIGNUP = {"username": "newshopper", "email": "new@example.com", "password1": "Good-Passphrase-123",
          "password2": "Good-Passphrase-123"}
for name in ("username", "email", "password1"):
    for label, value in [("operator", OPERATORS[0]), ("where", OPERATORS[2]), ("huge", HUGE), ("nul", "ab\x00cd"),
                         ("empty", "")]:
        if name == "password1" and label in ("operator", "where"):
            continue  # a password may hold any characters: it is hashed, never used as a query
        data = {**SIGNUP, name: value}
        if name == "password1":
            data["password2"] = value  # both fields agree: the value itself must be refused
        case(f"signup-{name}-{label}", "post", "/accounts/signup/", data=data)
case("signup-operator-key", "post", "/accounts/signup/",
     data={"username[$gt]": "", "email": "x@example.com", "password1": "Good-Passphrase-123",
           "password2": "Good-Passphrase-123"})

# --- login ----------------------------------------------------------------------------------------
for name in ("username", "password"):
    for label, value in [("operator", OPERATORS[0]), ("where", OPERATORS[2]), ("huge", HUGE), ("nul", "a\x00b")]:
        case(f"login-{name}-{label}", "post", "/accounts/login/",
             data={"username": "nobody", "password": "whatever", name: value}, ok=(400, 429))
case("login-operator-key", "post", "/accounts/login/", data={"username[$ne]": "", "password[$ne]": ""},
     ok=(400, 429))

# --- catalog: search is text (a safe 200 that finds nothing); filters and pages are validated ---
for i, op in enumerate(OPERATORS):
    case(f"catalog-q-operator{i}", "get", "/", data={"q": op}, ok=(200,), check=_literal_text)
    # no such category: a 404, and nothing of it cached (test_site_page_cache.py)
    case(f"catalog-category-operator{i}", "get", "/", data={"category": op}, ok=(404,), check=_no_results)
case("catalog-q-regex", "get", "/", data={"q": ".*"}, ok=(200,), check=_no_results)
case("catalog-q-xss", "get", "/", data={"q": XSS}, ok=(200,), check=_no_results)
case("catalog-q-operator-key", "get", "/?q[$gt]=&category[$ne]=", ok=(200,), check=_listing)
case("catalog-q-huge", "get", "/", data={"q": HUGE})
case("catalog-q-nul", "get", "/", data={"q": "tuner\x00"})
case("catalog-category-huge", "get", "/", data={"category": HUGE})
case("catalog-category-nul", "get", "/", data={"category": "Gift\x00Cards"})
for label, value in [("negative", "-1"), ("zero", "0"), ("text", "abc"), ("float", "1.5"), ("exp", "1e3"),
                     ("operator", OPERATORS[0]), ("huge", "9" * 5000), ("too-far", str(10 ** 9)), ("nul", "1\x00")]:
    case(f"catalog-page-{label}", "get", "/", data={"page": value})

# --- product page ---------------------------------------------------------------------------------
for label, pid in [("operator", "%7B%22%24gt%22%3A%22%22%7D"), ("dollar", "%24gt"), ("nul", "B000%00"),
                   ("newline", "B000%0A"), ("dots", "..%2F..%2Fadmin"), ("huge", "A" * 5000)]:
    case(f"product-id-{label}", "get", f"/p/{pid}/", ok=(404,))
for label, value in [("text", "abc"), ("negative", "-2"), ("operator", OPERATORS[0]), ("huge", "9" * 5000),
                     ("too-far", "100000")]:
    case(f"product-page-{label}", "get", f"/p/{PRODUCT}/", data={"page": value})

# --- rating form (logged in) ----------------------------------------------------------------------
RATE = f"/p/{PRODUCT}/rate/"
for label, value in [("zero", "0"), ("six", "6"), ("negative", "-1"), ("float", "4.5"), ("word", "five"),
                     ("empty", ""), ("operator", OPERATORS[0]), ("huge", HUGE), ("nul", "5\x00")]:
    case(f"rate-rating-{label}", "post", RATE, data={"rating": value}, login=True)
case("rate-rating-missing", "post", RATE, data={"text": "no stars"}, login=True)
case("rate-rating-operator-key", "post", RATE, data={"rating[$gt]": "0"}, login=True)
for label, value in [("huge", HUGE), ("too-long", "x" * 5001), ("nul", "nice\x00")]:
    case(f"rate-text-{label}", "post", RATE, data={"rating": "5", "text": value}, login=True)
for label, value in [("url", "https://evil.example/"), ("scheme-relative", "//evil.example"), ("huge", HUGE),
                     ("operator", OPERATORS[0]), ("nul", "recommendations\x00")]:
    case(f"rate-next-{label}", "post", RATE, data={"rating": "5", "next": value}, login=True)
case("rate-as-other-user", "post", RATE, data={"rating": "5", "user_id": OTHER_USER}, login=True)
case("rate-unknown-product", "post", "/p/NO-SUCH-PRODUCT/rate/", data={"rating": "5"}, login=True)
case("rate-product-operator", "post", "/p/%24gt/rate/", data={"rating": "5"}, login=True, ok=(404,))
case("rate-anonymous", "post", RATE, data={"rating": "5"}, ok=(302,))  # to the login page

# --- JSON API -------------------------------------------------------------------------------------
GOOD = {"product_id": PRODUCT, "rating": 5, "text": "ok"}
api_values = {
    "product_id": [("operator", {"$gt": ""}), ("where", {"$where": "sleep(5000)"}), ("array", [PRODUCT]),
                   ("number", 12345), ("null", None), ("empty", ""), ("huge", HUGE), ("nul", "B000\x00"),
                   ("dollar", "$gt"), ("newline", f"{PRODUCT}\n"), ("unknown", "NO-SUCH-PRODUCT"),
                   ("nested", {"a": {"b": {"c": [1, {"$ne": None}]}}})],
    "rating": [("string", "5"), ("float", 4.5), ("float-integral", 5.0), ("bool", True), ("null", None),
               ("array", [5]), ("operator", {"$gt": 0}), ("zero", 0), ("six", 6), ("huge-int", 10 ** 30),
               ("huge-string", HUGE)],
    "text": [("number", 123), ("array", ["x"]), ("operator", {"$ne": ""}), ("null", None), ("huge", HUGE),
             ("too-long", "x" * 5001), ("nul", "nice\x00")],
}
for name, values in api_values.items():
    for label, value in values:
        case(f"api-rating-{name}-{label}", "post", "/api/ratings/", json_body={**GOOD, name: value}, login=True)
for label, extra in [("user_id", {"user_id": OTHER_USER}), ("event_id", {"event_id": "a" * 32}),
                     ("ts", {"ts": 1.0}), ("schema_version", {"schema_version": 2}),
                     ("operator-key", {"$where": "sleep(5000)"})]:
    case(f"api-rating-unknown-{label}", "post", "/api/ratings/", json_body={**GOOD, **extra}, login=True)
for label, body in [("array", [GOOD]), ("string", "rate it"), ("number", 5), ("null", None)]:
    case(f"api-rating-body-{label}", "post", "/api/ratings/", json_body=body, login=True)
case("api-rating-bad-json", "post", "/api/ratings/", raw_body=b'{"product_id": ', login=True,
     content_type="application/json")
case("api-rating-huge-json", "post", "/api/ratings/", raw_body=json.dumps({"x": HUGE}).encode(), login=True,
     content_type="application/json")
case("api-rating-form-encoded", "post", "/api/ratings/", raw_body=b"product_id=x&rating=5", login=True,
     content_type="application/x-www-form-urlencoded", ok=(415,))
case("api-rating-anonymous", "post", "/api/ratings/", json_body=GOOD, ok=(401,))
for label, eid in [("operator", "%7B%22%24gt%22%3A%22%22%7D"), ("huge", "a" * 5000), ("nul", "abc%00")]:
    case(f"api-status-{label}", "get", f"/api/ratings/{eid}/", login=True, ok=(404,))
for label, pid in [("dollar", "%24gt"), ("nul", "B000%00"), ("newline", "B000%0A"), ("huge", "A" * 5000)]:
    case(f"api-similar-{label}", "get", f"/api/products/{pid}/similar/", ok=(404,))


def _own_list_only(body: str) -> None:
    assert json.loads(body)["user_id"].startswith("site-")


case("api-recs-other-user-param", "get", f"/api/recommendations/?user_id={OTHER_USER}", login=True, ok=(200,),
     check=_own_list_only)


# --- the test -------------------------------------------------------------------------------------

def _mongo_state(db, user_ids: list[str], product: str) -> dict[str, Any]:
    """What a request could have changed in MongoDB, read by ``_id`` (FerretDB counts by scanning).

    The site writes nothing to MongoDB itself (workers do, from Kafka), so this guards against an
    injection reaching the database: no new collection, no new live rating, the acting and the
    other user's history and list, and the product, unchanged.
    """
    state: dict[str, Any] = {"collections": sorted(db.list_collection_names()),
                             "ratings": db["ratings"].estimated_document_count(),
                             "product": db["products"].find_one({"_id": product})}
    for uid in user_ids:
        state[f"history:{uid}"] = db["user_history"].find_one({"_id": uid})
        state[f"recs:{uid}"] = db["recommendations"].find_one({"_id": uid})
    return state


def _django_state() -> dict[str, int]:
    from django.contrib.auth.models import User
    from django.contrib.sessions.models import Session
    from knox.models import AuthToken

    from accounts.models import Profile
    from shop.models import RatingSubmission

    return {m.__name__: m.objects.count() for m in (User, Profile, RatingSubmission, AuthToken, Session)}


def _fill(value: Any, product: str, other: str) -> Any:
    if isinstance(value, str):
        return value.replace(PRODUCT, product).replace(OTHER_USER, other)
    if isinstance(value, dict):
        return {k: _fill(v, product, other) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, product, other) for v in value]
    return value


def _body_size(kwargs: dict[str, Any]) -> int:
    data = kwargs.get("data")
    if isinstance(data, (str, bytes)):
        return len(data)
    if isinstance(data, dict):
        return sum(len(str(k)) + len(str(v)) for k, v in data.items())
    return 0


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_without_side_effects(c: Case, site, client, make_user, mongo_db, ratings_probe):
    from django.conf import settings as dj_settings

    product = site.order("Gift Cards")[0]
    other = make_user(reviewer_id=min(site.reviewer_counts()))  # a real reviewer with a history
    me = make_user()
    if c.login:
        client.force_login(me)
    uids = [me.profile.recommender_id, other.profile.recommender_id]
    kafka_mark, mongo_before, django_before = ratings_probe.mark(), _mongo_state(mongo_db, uids, product), \
        _django_state()

    url = _fill(c.url, product, other.profile.recommender_id)
    kwargs: dict[str, Any] = {}
    if c.json_body is not UNSET:
        kwargs = {"data": json.dumps(_fill(c.json_body, product, other.profile.recommender_id)),
                  "content_type": "application/json"}
    elif c.raw_body is not None:
        kwargs = {"data": c.raw_body, "content_type": c.content_type}
    elif c.data is not None:
        kwargs = {"data": _fill(c.data, product, other.profile.recommender_id)}
    response = getattr(client, c.method)(url, **kwargs)
    # A body over the site's limit is refused before any view sees it (recsite.bodylimit).
    expected = (413,) if c.method == "post" and _body_size(kwargs) > dj_settings.REQUEST_MAX_BODY_BYTES else c.ok

    body = b"".join(response.streaming_content if response.streaming else [response.content]).decode("utf-8",
                                                                                                     "replace")
    assert response.status_code in expected, f"{c.id}: {response.status_code} {body[:300]!r}"
    if c.check:
        c.check(body)
    leaked = [word for word in LEAKS if word in body]
    assert not leaked, f"{c.id}: the answer shows internals {leaked}: {body[:500]!r}"
    assert XSS not in body, f"{c.id}: input reflected unescaped"
    assert ratings_probe.count_since(kafka_mark) == 0, f"{c.id}: something was published to Kafka"
    assert _mongo_state(mongo_db, uids, product) == mongo_before, f"{c.id}: MongoDB changed"
    assert _django_state() == django_before, f"{c.id}: Django's database changed"
