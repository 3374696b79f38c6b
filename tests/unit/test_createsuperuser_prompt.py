"""``manage.py createsuperuser`` when it asks (accounts' own command, Django's extended): an address
another account has (in any case) is an error and asked again, as Django does for a username that
is taken; a blank one is allowed. Django's prompts are ``input()`` and ``getpass``, replaced here by
the answers typed, as Django's own tests of the command do."""
from __future__ import annotations

import builtins
import getpass
import uuid
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

PASSWORD = "Correct-Horse-Battery-9"


class _Terminal(StringIO):
    def isatty(self) -> bool:  # Django's command asks only on a terminal
        return True


def _answering(monkeypatch, answers: list[str]) -> list[str]:
    """Each ``input()`` prompt answered by the next of ``answers``; the prompts are kept."""
    prompts: list[str] = []

    def typed(prompt: str = "") -> str:
        prompts.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr(builtins, "input", typed)
    monkeypatch.setattr(getpass, "getpass", lambda prompt="Password: ": PASSWORD)
    return prompts


def _create(**options) -> str:
    """Run the command as asked at a terminal; what it wrote to stderr."""
    err = StringIO()
    call_command("createsuperuser", stdin=_Terminal(), stdout=StringIO(), stderr=err, **options)
    return err.getvalue()


@pytest.fixture
def owner(db) -> User:
    return User.objects.create(username=f"o{uuid.uuid4().hex[:8]}", email=f"{uuid.uuid4().hex[:8]}@example.com")


def test_a_taken_address_typed_is_asked_again(monkeypatch, owner):
    name = f"s{uuid.uuid4().hex[:8]}"
    prompts = _answering(monkeypatch, [name, owner.email.upper(), f"{name}@example.com"])
    err = _create()
    assert "Error: Another account already uses this e-mail address" in err
    assert [p.split(":")[0].split(" (")[0] for p in prompts] == ["Username", "Email address", "Email address"]
    assert User.objects.get(username=name, is_superuser=True).email == f"{name}@example.com"


def test_a_taken_address_given_as_option_is_asked_for(monkeypatch, owner):
    name = f"s{uuid.uuid4().hex[:8]}"
    prompts = _answering(monkeypatch, [""])  # no address this time: allowed
    err = _create(username=name, email=owner.email)
    assert "Error: Another account already uses this e-mail address" in err
    assert [p.split(":")[0].split(" (")[0] for p in prompts] == ["Email address"]
    assert User.objects.get(username=name, is_superuser=True).email == ""
