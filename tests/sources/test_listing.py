"""Tests of pneumokeras.sources.listing: the layout options."""

from __future__ import annotations

import pytest

from pneumokeras.errors import UserError
from pneumokeras.sources.listing import LayoutOptions


@pytest.mark.parametrize(
    "options, message",
    [
        (LayoutOptions("kermany"), "--layout must be one of rsna, folders, findings"),
        (LayoutOptions("findings", uncertain="maybe"), "--uncertain must be one of"),
        (LayoutOptions("folders", label_column="x"), "--label-column applies to --layout findings"),
        (LayoutOptions("rsna", positive="1"), "--positive applies to --layout findings"),
        (LayoutOptions("findings", keep_splits=True), "--keep-splits applies to --layout folders"),
        (LayoutOptions("rsna", patient_pattern="(x)"), "--patient-pattern applies"),
    ],
)
def test_options_of_another_layout_are_refused(options, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        options.check()
