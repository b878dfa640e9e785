"""`worker models`: every model and version in a repository, and which serves."""

from __future__ import annotations

import json

from model_sets import copy_set
from typer.testing import CliRunner

from worker.cli import app
from worker.model import publish

runner = CliRunner()


def test_models_lists_each_version_and_the_one_serving(served, real_model_path, tmp_path):
    first = publish.current_version(served)
    newer = copy_set(real_model_path, tmp_path / "elsewhere" / "mnist.keras", version="v2",
                     created_at="2099-01-01T00:00:00+00:00")
    publish.add_version(newer, served, "v2")
    (served.parent / "notes").mkdir()  # not a model: left out
    (served.parent / "mnist" / "broken").mkdir()
    (served.parent / "mnist" / "broken" / "mnist.json").write_text("{not json")

    listed = runner.invoke(app, ["models", "--models", str(served.parent), "--json"])
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.output)
    assert [(v["model"], v["version"], v["serving"]) for v in found] == [("mnist", "v2", False),
                                                                        ("mnist", first, True)]
    shipped = found[1]
    assert shipped["classes"] == [str(d) for d in range(10)] and shipped["test_accuracy"] > 0.99
    assert shipped["profile"] and shipped["size_bytes"] > 0 and shipped["hard_sets"]

    table = runner.invoke(app, ["models", "--models", str(served.parent)])
    assert table.exit_code == 0 and len(table.output.splitlines()) == 2
    assert "serving" in table.output.splitlines()[1] and "99." in table.output


def test_models_of_a_folder_that_is_not_there_is_a_configuration_error(tmp_path):
    result = runner.invoke(app, ["models", "--models", str(tmp_path / "none")])
    assert result.exit_code == 78 and "not a folder" in result.output
