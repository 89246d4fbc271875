"""The faces study: pairs checks with one-line errors, the test-people leak guard, threshold /
ROC / EER / one-shot maths against scikit-learn or by hand, the tower's computed sizes and
Koch's initialisation, and tiny end-to-end runs (both protocols, eval on a View 2 file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from conftest import real_data
from vislab.analysis import faces as pair_metrics
from vislab.cli import main
from vislab.config import load_config
from vislab.data.builtin import synthetic_lfw
from vislab.data.lfw import parse_pairs
from vislab.errors import VislabError
from vislab.models.faces import ConvTower, koch
from vislab.studies import faces as study

TINY = ["--epochs=2", "--batch-size=16", "--pairs-per-epoch=0", "--image-size=24", "--crop=160", "--widths=[8,16,32,64]",
        "--embedding-dim=32", "--oneshot-trials=50", "--num-threads=1", "--show-pairs=4"]


@pytest.fixture(scope="module")
def lfw_root(tmp_path_factory) -> Path:
    """A private copy of the synthetic LFW root (tests may damage it)."""
    root = tmp_path_factory.mktemp("lfw") / "root"
    shutil.copytree(synthetic_lfw(), root)
    return root


def _damaged(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    return copy


def _error_line(stderr: str) -> str:
    """The CLI's error: exactly one line, after any progress lines."""
    errors = [line for line in stderr.splitlines() if line.startswith("vislab: error:")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]), stderr
    return errors[0]


# --- bad input: one line naming file and line, exit 2, no run folder left ---------------------


def _replace_train_line(root: Path, line: int, text: str) -> Path:
    path = root / "lfw" / "pairsDevTrain.txt"
    lines = path.read_text().split("\n")
    lines[line - 1] = text
    path.write_text("\n".join(lines))
    return path


@pytest.mark.parametrize("row, message", [
    ("Person_A_Train00\t1", "2 fields"),
    ("Person_A_Train00\tx\t2", "image index 'x'"),
    ("Person_A_Train00\t1\t99", "has 5 images"),
    ("Nobody_Here\t1\t2", "no folder 'Nobody_Here'"),
    ("../etc\t1\t2", "not a plain folder name"),
    ("a/b\t1\tPerson_A_Train00\t2", "not a plain folder name"),
])
def test_bad_pairs_row_is_one_line_naming_file_and_line(lfw_root, tmp_path, capsys, row, message):
    root = _damaged(lfw_root, tmp_path)
    _replace_train_line(root, 3, row)
    out = tmp_path / "runs"
    code = main(["run", "faces", f"--data-root={root}", f"--out={out}", *TINY])
    error = _error_line(capsys.readouterr().err)
    assert code == 2
    assert "pairsDevTrain.txt:3:" in error and message in error, error
    assert not any((out / "faces").glob("*")) if (out / "faces").exists() else True


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_jpeg_names_the_image_and_pairs_line(lfw_root, tmp_path, capsys, damage):
    root = _damaged(lfw_root, tmp_path)
    pairs = parse_pairs(root / "lfw" / "pairsDevTest.txt")
    victim = pairs[0]
    image = root / "lfw" / "lfw-deepfunneled" / victim.name1 / f"{victim.name1}_{victim.index1:04d}.jpg"
    if damage == "missing":  # the highest index would just lower the count: remove it and rename the next
        image.unlink()
    else:
        image.write_bytes(b"\xff\xd8 this is not a jpeg")
    out = tmp_path / "runs"
    code = main(["run", "faces", f"--data-root={root}", f"--out={out}", *TINY])
    error = _error_line(capsys.readouterr().err)
    assert code == 2
    assert "pairsDevTest.txt:" in error or image.name in error, error
    assert not (out / "faces").exists() or not any((out / "faces").iterdir())


# --- the leak guard -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["restricted", "unrestricted"])
def test_no_image_of_a_test_person_is_loaded_for_training(lfw_root, monkeypatch, protocol):
    loads: list[list[tuple[str, int]]] = []
    real_load = study.load_faces

    def recording(image_dir, keys, **kwargs):
        loads.append(list(keys))
        return real_load(image_dir, keys, **kwargs)

    monkeypatch.setattr(study, "load_faces", recording)
    config = load_config(study.Config, overrides=[f"data_root={lfw_root}", f"protocol={protocol}",
                                                  "image_size=16", "crop=160"])
    data = study.load_data(config)
    test_people = study.names_of(parse_pairs(lfw_root / "lfw" / "pairsDevTest.txt"))
    train_people = study.names_of(parse_pairs(lfw_root / "lfw" / "pairsDevTrain.txt"))
    # The first load is the training images; it holds training-list people only.
    assert loads[0] and {name for name, _ in loads[0]} <= train_people
    assert not {name for name, _ in loads[0]} & test_people
    assert len(data.train_images) == len(loads[0])
    # Validation images are training-list people too; test images only test people.
    assert {name for name, _ in loads[1]} <= train_people
    assert {name for name, _ in loads[2]} <= test_people
    if protocol == "unrestricted":  # every image (5 each) of the training-list people not held out
        names = {name for name, _ in loads[0]}
        assert len(loads[0]) == 5 * len(names) and len(names) > len(train_people) // 2
        assert not names & {name for name, _ in loads[1]}  # validation people are held out


def test_guard_refuses_a_test_file_sharing_people_with_training(lfw_root, tmp_path, capsys):
    out = tmp_path / "runs"
    train_file = lfw_root / "lfw" / "pairsDevTrain.txt"
    code = main(["run", "faces", f"--data-root={lfw_root}", f"--out={out}", f"--pairs-file={train_file}", *TINY])
    error = capsys.readouterr().err
    assert code == 2 and "must not overlap" in error, error
    with pytest.raises(VislabError, match="people of the test pairs"):
        study.guard_no_test_people([("A", 1), ("B", 2)], {"B"}, "training")


def test_pair_components_join_images_through_same_pairs_only():
    from vislab.data.lfw import Pair

    keys = [("A", 1), ("A", 2), ("A", 3), ("B", 1), ("C", 1)]
    pairs = [Pair("A", 1, "A", 2, 1), Pair("A", 2, "A", 3, 2), Pair("B", 1, "C", 1, 3)]
    labels = study.pair_components(keys, pairs).tolist()
    assert labels[0] == labels[1] == labels[2]
    assert len({labels[0], labels[3], labels[4]}) == 3


# --- maths against references -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_threshold_maximises_accuracy_like_sklearn_roc(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 2)  # rounding makes ties
    threshold, accuracy = pair_metrics.choose_threshold(scores, labels)
    fpr, tpr, thresholds = skm.roc_curve(labels, scores)
    positives, negatives = labels.sum(), len(labels) - labels.sum()
    best = ((tpr * positives + (1 - fpr) * negatives) / len(labels)).max()
    assert accuracy == pytest.approx(best)
    assert pair_metrics.accuracy_at(scores, labels, threshold) == pytest.approx(accuracy)
    assert threshold not in set(scores.tolist())  # between scores, not on one


def test_auc_and_eer_against_sklearn_and_by_hand():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    scores = rng.normal(labels * 1.5, 1.0)
    figures = pair_metrics.roc_figures(scores, labels)
    assert figures["auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    # By hand: sweep thresholds, the EER is where false accepts and false rejects meet.
    grid = np.linspace(scores.min(), scores.max(), 20001)
    far = np.array([(scores[labels == 0] >= t).mean() for t in grid[::10]])
    frr = np.array([(scores[labels == 1] < t).mean() for t in grid[::10]])
    i = np.argmin(np.abs(far - frr))
    assert figures["eer"] == pytest.approx((far[i] + frr[i]) / 2, abs=0.005)
    # two gaussians 1.5 sd apart: EER = Phi(-0.75) = 0.2266
    assert figures["eer"] == pytest.approx(0.2266, abs=0.02)
    assert pair_metrics.roc_figures([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == {"auc": 1.0, "eer": 0.0}


def test_oneshot_trials_and_accuracy():
    person = torch.tensor([0, 0, 1, 1, 2, 3, 4, 5])
    probes, candidates = pair_metrics.oneshot_trials(person, 5, 200, seed=0)
    assert candidates.shape == (200, 5)
    assert (person[probes] == person[candidates[:, 0]]).all() and (probes != candidates[:, 0]).all()
    assert (person[candidates[:, 1:]] != person[probes].unsqueeze(1)).all()
    for row in person[candidates[:, 1:]]:
        assert len(set(row.tolist())) == 4  # four different other people
    same = (person[probes].unsqueeze(1) == person[candidates]).float()  # a perfect scorer
    assert pair_metrics.oneshot_accuracy(same) == 1.0
    assert pair_metrics.oneshot_accuracy(torch.ones(10, 5)) == 0.0  # ties are wrong
    assert pair_metrics.oneshot_trials(person, 20, 10, seed=0) is None  # only 6 people


# --- models ---------------------------------------------------------------------------------


def test_koch_tower_sizes_are_computed_and_initialised_like_the_paper():
    torch.manual_seed(0)
    model = koch()
    assert model.tower.block_sizes == [(64, 48, 48), (128, 21, 21), (128, 9, 9), (256, 6, 6)]
    assert model.tower.embedding_dim == 4096
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert torch.cat([c.weight.flatten() for c in convs]).std().item() == pytest.approx(0.01, rel=0.05)
    assert linears[0].weight.std().item() == pytest.approx(0.2, rel=0.05)
    biases = torch.cat([m.bias for m in convs + linears])
    assert biases.mean().item() == pytest.approx(0.5, abs=0.002) and biases.std().item() == pytest.approx(0.01, rel=0.1)
    assert sum(p.numel() for p in model.tower.parameters()) == 38_947_648  # Koch: 38,951,745 with the head


def test_tower_refuses_a_block_that_shrinks_to_nothing():
    with pytest.raises(ValueError, match="would output nothing"):
        ConvTower(in_channels=1, image_size=20, conv_blocks=[{"out_channels": 4, "kernel": 10, "pool": True},
                                                             {"out_channels": 4, "kernel": 7}], fc_layers=[])


def test_config_checks():
    with pytest.raises(VislabError, match="protocol"):
        load_config(study.Config, overrides=["protocol=open"])
    with pytest.raises(VislabError, match="head=l1"):
        load_config(study.Config, overrides=["loss=binary", "head=cosine"])
    assert load_config(study.Config, overrides=["protocol=unrestricted"]).resolved_loss() == "cosface"


def test_configs_folder_presets_load():
    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "faces").glob("*.yaml")):
        config = load_config(study.Config, yaml_file=path)
        with torch.device("meta"):  # sizes and shapes only: report 000's tower has a 170M-weight layer
            net = study.build_net(config, 1 if config.grayscale else 3)
        assert net.tower.embedding_dim > 0, path
        if config.model_name == "tower":
            assert net.tower.block_sizes[-1] == (512, 9, 9)  # report 000: 9x9x512 before the FC layer


# --- tiny runs ------------------------------------------------------------------------------


def test_tiny_runs_both_protocols_and_eval_on_a_view2_file(lfw_root, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "faces", f"--data-root={lfw_root}", f"--out={out}", *TINY]) == 0
    restricted = Path(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((restricted / "summary.json").read_text())
    keys = {"protocol", "test_accuracy", "test_accuracy_at_0_5", "test_auc", "test_eer", "threshold", "val_accuracy",
            "oneshot_5way", "oneshot_20way", "train_minutes", "pairs_file"}
    assert keys <= set(summary) and summary["protocol"] == "restricted"
    assert 0 <= summary["test_accuracy"] <= 1 and 0 <= summary["oneshot_5way"] <= 1
    assert summary["oneshot_20way"] is None  # 16 test people: no 20-way trial
    for plot in ("curves", "roc", "score_histogram", "random_test_pairs"):
        assert (restricted / "plots" / f"{plot}.png").stat().st_size > 1000
    assert (restricted / "tables" / "experiments.csv").is_file() and (restricted / "report.html").is_file()

    # unrestricted, binary Koch head on a tiny tower, one offline copy: the other branches
    assert main(["run", "faces", f"--data-root={lfw_root}", f"--out={out}", *TINY, "--protocol=unrestricted",
                 "--loss=binary", "--augment.offline-copies=2"]) == 0
    unrestricted = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads((unrestricted / "summary.json").read_text())["protocol"] == "unrestricted"
    experiments = (unrestricted / "tables" / "experiments.csv").read_text().splitlines()
    assert len(experiments) == 3  # header, the restricted run, this run

    # a View 2 layout file ("folds n") of the test pairs, scored with the saved threshold
    rows = parse_pairs(lfw_root / "lfw" / "pairsDevTest.txt")
    half = len(rows) // 4
    same, different = [r for r in rows if r.same][: 2 * half], [r for r in rows if not r.same][: 2 * half]
    lines = ["2\t" + str(half)]
    for fold in range(2):
        lines += [f"{r.name1}\t{r.index1}\t{r.index2}" for r in same[fold * half:(fold + 1) * half]]
        lines += [f"{r.name1}\t{r.index1}\t{r.name2}\t{r.index2}" for r in different[fold * half:(fold + 1) * half]]
    view2 = tmp_path / "pairs_view2.txt"
    view2.write_text("\n".join(lines) + "\n")
    assert main(["eval", "faces", "--checkpoint", str(restricted), f"--pairs-file={view2}"]) == 0
    evaluated = Path(capsys.readouterr().out.strip().splitlines()[-1])
    result = json.loads((evaluated / "summary.json").read_text())
    assert result["pairs_file"] == str(view2) and result["test_pairs"] == 4 * half
    assert result["threshold"] == summary["threshold"]
    assert result["people_shared_with_training_list"] == 0
    assert (evaluated / "plots" / "roc.png").is_file()


@pytest.mark.real_data
def test_real_view1_lists_are_disjoint_and_complete():
    root = real_data("lfw").parent
    image_dir, train_file, test_file, _ = study.data_root_and_files(load_config(study.Config, overrides=[f"data_root={root}"]))
    train, test = study.read_pairs(image_dir, train_file), study.read_pairs(image_dir, test_file)
    assert (len(train), len(test)) == (2200, 1000)
    assert sum(p.same for p in train) == 1100 and sum(p.same for p in test) == 500
    assert not study.names_of(train) & study.names_of(test)


def test_score_histogram_zooms_in_when_every_score_is_crowded_together():
    import matplotlib.pyplot as plt

    from vislab.analysis.faces import score_histogram

    scores = torch.tensor([0.9991, 0.9993, 0.9995, 0.9998])
    figure = score_histogram(scores, torch.tensor([1, 0, 1, 0]), threshold=0.9994)
    low, high = figure.axes[0].get_xlim()
    assert 0.99 < low < 0.9991 and 0.9998 < high < 1.001  # not one bar at the right edge of [0, 1]
    plt.close(figure)
    figure = score_histogram(torch.tensor([0.1, 0.9]), torch.tensor([0, 1]), threshold=0.5)
    assert figure.axes[0].get_xlim()[0] < 0.05 and figure.axes[0].get_xlim()[1] > 0.95
    plt.close(figure)
