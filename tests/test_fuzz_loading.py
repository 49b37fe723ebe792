"""Fuzzing the loader with a fixed budget: mutated rule and config files never raise, hang or half-load.

The longer run is ``bench/fuzz_loading.py`` (10,000 files and more, with hangs and peak RSS).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzzing import CONFIG_SEED, check_config_file, check_rule_file, config_for_rules, mutate, seeds

SEEDS = seeds()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(rng=st.randoms(use_true_random=False), seed=st.sampled_from(SEEDS))
def test_mutated_rule_files_load_or_are_problems(workdir: Path, rng: random.Random, seed: str) -> None:
    config = config_for_rules(str(workdir))
    path = workdir / "rule.yaml"
    path.write_bytes(mutate(rng, seed))
    started = time.monotonic()
    check_rule_file(str(path), config)
    assert time.monotonic() - started < 2


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_mutated_config_files_load_or_are_problems(workdir: Path, rng: random.Random) -> None:
    path = workdir / "watchdog-fuzz.yaml"
    path.write_bytes(mutate(rng, CONFIG_SEED))
    started = time.monotonic()
    check_config_file(str(path))
    assert time.monotonic() - started < 2


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512) | st.text(max_size=256).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_are_problems_never_exceptions(workdir: Path, data: bytes) -> None:
    path = workdir / "bytes.yaml"
    path.write_bytes(data)
    check_rule_file(str(path), None)


def test_the_seeds_themselves_load() -> None:
    # the mutator starts from valid files, so each mutation tests one departure from a good file
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        config = config_for_rules(directory)
        for index, text in enumerate(SEEDS):
            path = Path(directory) / f"seed{index}.yaml"
            path.write_text(text)
            assert check_rule_file(str(path), config) == "rule", text
        path = Path(directory) / "config.yaml"
        path.write_text(CONFIG_SEED.replace("rules_dir: rules", f"rules_dir: {directory}"))
        assert check_config_file(str(path)) == "config"
