"""Every libpq secret in a URL is masked, not only password: sslpassword (the client key's
passphrase), oauth_client_secret and the SCRAM keys were shown in repr(db), db.url,
settings["url"] and the "is closed" error."""

from __future__ import annotations

import pytest

import storekit
from storekit.url import DatabaseURL, mask_secrets

SECRET = "Hunter2-not-shown"
# libpq's secret connection parameters (password and sslpassword are marked "*" by
# PQconndefaults; the SCRAM keys are worth as much as the password).
SECRET_OPTIONS = ["password", "sslpassword", "oauth_client_secret", "scram_client_key",
                  "scram_server_key"]


@pytest.mark.parametrize("key", SECRET_OPTIONS)
def test_a_secret_option_is_masked_in_the_url(key: str) -> None:
    url = DatabaseURL.parse(f"postgresql://u:pw@h/db?sslmode=disable&{key}={SECRET}")
    assert SECRET not in str(url) + repr(url)
    assert ("u:***@" if key == "password" else f"{key}=***") in str(url)
    assert f"{key}='{SECRET}'" in url.conninfo()  # the driver still gets it


@pytest.mark.parametrize("key", SECRET_OPTIONS)
def test_mask_secrets_masks_every_secret_key(key: str) -> None:
    for text in (f"host=h {key}={SECRET} user=u", f"host=h {key} = '{SECRET} x' user=u",
                 f"postgresql://u@h/db?{key}={SECRET}&sslmode=disable"):
        assert SECRET not in mask_secrets(text)


def test_an_open_database_never_shows_sslpassword(storekit_postgres_url: str) -> None:
    # libpq reads sslpassword only to decrypt a client key: with sslmode=disable the
    # connection succeeds and the value must still never be shown.
    raw = f"{storekit_postgres_url}?sslmode=disable&sslpassword={SECRET}"
    db = storekit.create_database(raw)
    texts = [repr(db), db.url, str(db.settings["url"])]
    db.close()
    with pytest.raises(storekit.StoreError) as info:
        db.run("SELECT 1")
    texts.append(str(info.value))
    assert not any(SECRET in t for t in texts), texts
    assert all("sslpassword=***" in t for t in texts)
