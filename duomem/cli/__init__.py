"""The ``duomem`` command (:mod:`duomem.cli.main`) and what its sub-commands share."""


def comma_list(text: str) -> list[str]:
    """The non-empty items of a comma-separated option (``"heat, cool,"`` -> ``["heat", "cool"]``)."""
    return [item.strip() for item in text.split(",") if item.strip()]
