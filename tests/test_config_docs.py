"""The README's config reference is generated from the fields' metadata, and agrees with it."""

from __future__ import annotations

import dataclasses

from lead_ray.config import OPERATIONAL, REPO_ROOT, SECTIONS, config_fields
from lead_ray.config.docs import config_reference, readme_block


def test_the_readme_reference_is_the_generated_one() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_block(readme) == config_reference(), "run: python -m lead_ray.config.docs --write"


def test_every_key_is_documented_once_in_its_section() -> None:
    text = config_reference()
    for key, (_, f) in config_fields().items():
        assert text.count(f"| `{key}` |") == 1, key
        assert f.metadata.get("help"), f"config key {key!r} has no help"
    assert sum(len(dataclasses.fields(cls)) for cls in SECTIONS.values()) == len(config_fields())  # no key twice
    assert text.count("*(operational)*") == len(OPERATIONAL)


def test_train_help_lists_every_key_by_section(capsys) -> None:
    import pytest

    from lead_ray.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name, cls in SECTIONS.items():
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{name}:"))
        assert [k.strip() for k in line.split(":", 1)[1].split(",")] == [f.name for f in dataclasses.fields(cls)]
