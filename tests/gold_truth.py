"""The batch truth of gold, now in the library (``archlab/testing/truth.py``) so the chaos harness can use it
too; re-exported here under the names the tests import."""

from archlab.testing.truth import Key, differences, gold_key, truth

__all__ = ["Key", "differences", "gold_key", "truth"]
