"""A device's launch family comes from the catalog's vendor and kind, not the id's spelling."""

from __future__ import annotations

import pytest

from npucenter.catalog import default_catalog
from npucenter.engines import device_family
from npucenter.errors import NotFoundError


def test_every_catalog_device_has_the_family_of_its_vendor_or_kind() -> None:
    expected = {"FuriosaAI": "rngd", "Rebellions": "rbln", "host": "cpu"}
    for dev in default_catalog().devices:
        assert device_family(dev.device_id) == expected.get(dev.vendor, "gpu"), dev.device_id
        for alias in dev.aliases:
            assert device_family(alias.upper()) == device_family(dev.device_id)


def test_a_furiosa_card_not_spelled_rngd_is_still_a_furiosa_card() -> None:
    assert device_family("warboy") == "rngd"  # the id's spelling said "gpu"


def test_a_user_catalog_device_takes_its_vendors_family() -> None:
    catalog = default_catalog().with_documents(
        [
            {
                "devices": [
                    {
                        "id": "lab_npu_x",
                        "vendor": "Rebellions",
                        "name": "a lab card",
                        "kind": "npu",
                        "source": "lab measurement",
                    }
                ]
            }
        ]
    )
    assert device_family("lab_npu_x", catalog) == "rbln"


def test_an_unknown_device_is_not_guessed() -> None:
    with pytest.raises(NotFoundError):
        device_family("h100-but-misspelled")
