from bnaudit import matches
from bnaudit._patterns import covering_prefix, names


def test_design_examples():
    assert matches("backbone", "backbone.layer1.0.bn1")
    assert matches("backbone.layer[12]", "backbone.layer2.0.bn1")
    assert not matches("backbone.layer[12]", "backbone.layer3.0.bn1")
    assert matches("**.bn1", "backbone.layer1.0.bn1")
    assert matches("**.bn1", "bn1")
    assert not matches("**.bn1", "backbone.bn10")
    assert not matches("back", "backbone.bn")
    assert matches("*.1", "0.1")


def test_covering_prefix_is_the_frozen_sub_model():
    assert covering_prefix(["model_A"], "model_A.block.bn1") == "model_A"
    assert covering_prefix(["*.block"], "model_A.block.bn1") == "model_A.block"
    assert covering_prefix(["head"], "model_A.block.bn1") is None


def test_names_needs_the_whole_path():
    assert names(["**.bn1"], "a.bn1")
    assert not names(["a"], "a.bn1")
