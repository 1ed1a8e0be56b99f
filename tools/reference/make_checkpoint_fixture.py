"""tests/fixtures/nanochat_checkpoint/: a checkpoint nanochat's own base_train.py saved, for l3lab's import test.

compare_curves.py --golden (the dense 10-step case, see tests/fixtures/curves/dense.json's "command") runs
nanochat b7629ef's scripts/base_train.py, whose save_checkpoint writes base_checkpoints/d2/model_000010.pt
and meta_000010.json into its --work directory. This script copies the meta as it is and the model as a plain
dict of the same tensors: nanochat saves model.state_dict(), a collections.OrderedDict, which libtorch's
unpickler cannot read (docs/training.md); the test makes the OrderedDict and bfloat16 variants itself.
meta's val_bpb is the reference's own validation bpb of these weights.

    PYTHONPATH=.fixtures-venv .venv/bin/python tools/reference/make_checkpoint_fixture.py --work /tmp/golden-dense
"""
import argparse
import shutil
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "nanochat_checkpoint"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--work", required=True, type=Path, help="compare_curves.py's --work directory of the dense golden")
args = parser.parse_args()
src = args.work / "nanochat_base" / "base_checkpoints" / "d2"
OUT.mkdir(parents=True, exist_ok=True)
state = torch.load(src / "model_000010.pt", map_location="cpu")
assert type(state).__name__ == "OrderedDict"
torch.save(dict(state), OUT / "model_000010.pt")
shutil.copy(src / "meta_000010.json", OUT / "meta_000010.json")
print(f"{len(state)} tensors -> {OUT}")
