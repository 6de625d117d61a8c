"""The demo's form login goes back to ``next`` only when it is a path of this site: never
to another host, whatever a browser would make of the characters in it, and never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest
from flask import Flask

from ..conftest import built

HOME = "/tutor-times/me/dashboard"


@pytest.fixture(scope="module")
def demo() -> Iterator[Flask]:
    with built("sqlite") as app:
        yield app


def form_login(app: Flask, next_: str) -> tuple[int, str]:
    """POST the login form with ``next`` as the browser sends it (percent-decoded by the
    form's encoding) and return the status and the Location header."""
    r = app.test_client().post(
        "/login",
        data=f"username=tutor1&password=password&next={quote(next_, safe='')}",
        content_type="application/x-www-form-urlencoded",
    )
    return r.status_code, r.headers.get("Location", "")


@pytest.mark.parametrize(
    "next_",
    [
        "/\t/evil.example",  # browsers drop tabs and newlines from a URL: //evil.example
        "/\n/evil.example",
        "/\r/evil.example",
        "\t//evil.example",
        " //evil.example",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "http:/evil.example",
        "javascript:alert(1)",
        "/%09/evil.example",  # as typed: a path (percent signs and all), never another host
        "/\x00/x",
        "/\r/x",
        "/x\r\nSet-Cookie: a=b",
        "/\u2028/evil.example",
        "",
        "evil.example",
    ],
)
def test_next_never_leaves_the_site_nor_fails(demo: Flask, next_: str) -> None:
    status, location = form_login(demo, next_)
    assert status == 302
    target = urlsplit(location)
    assert not target.scheme and not target.netloc, location
    assert location.startswith("/") and not location.startswith("//"), location
    assert not any(ord(c) < 0x20 or c in "\\\x7f" for c in location), location


@pytest.mark.parametrize(
    "next_", [HOME, "/tutor-times/units/1/dashboard?from=2026-03-01&tz=Europe/Berlin", "/me"]
)
def test_a_path_of_this_site_is_where_the_login_goes(demo: Flask, next_: str) -> None:
    assert form_login(demo, next_) == (302, next_)


@pytest.mark.parametrize("next_", ["/\t/evil.example", "/\r/x", "https://evil.example/"])
def test_a_refused_next_goes_home(demo: Flask, next_: str) -> None:
    assert form_login(demo, next_) == (302, HOME)
