"""Variant registry: lookups, errors, schedules and MACs."""

from __future__ import annotations

import pytest

from athe.variants import VARIANTS, Level, get_variant, keep_count, token_schedule


def test_registry_has_the_issue_variants():
    assert {"athe-simple", "athe-mini", "dense-deit-tiny"} <= set(VARIANTS)


def test_unknown_variant_lists_known_names_and_suggests():
    with pytest.raises(LookupError) as err:
        get_variant("athe-mni")
    msg = str(err.value)
    assert "athe-simple" in msg and "dense-deit-tiny" in msg and "Did you mean 'athe-mini'" in msg


def test_unknown_level_names_levels():
    with pytest.raises(LookupError, match="levels: simple, complex, dense"):
        get_variant("athe-mini").level("simpel")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_levels_are_cheapest_first_and_last_is_dense(name):
    v = get_variant(name)
    macs = [v.macs(lv) for lv in v.levels]
    assert macs == sorted(macs)
    assert v.dense_level.is_dense and v.levels[-1].heads in (None, v.backbone.num_heads)


def test_athe_simple_is_the_paper_recipe():
    v = get_variant("athe-simple")
    b = v.backbone
    assert (b.img_size, b.patch_size, b.embed_dim, b.depth, b.num_heads, b.num_classes) == (224, 16, 192, 12, 3, 100)
    simple, complex_ = v.level("simple"), v.level("complex")
    dropped = lambda lv: 1 - (v.tokens_per_block(lv)[-1] - 1 - lv.fuse) / b.num_patches  # noqa: E731
    assert 0.5 <= dropped(simple) <= 0.7 and simple.heads == 2
    assert 0.2 <= dropped(complex_) <= 0.3 and complex_.heads == 3


def test_token_schedule_by_hand():
    v = get_variant("athe-mini")
    # 64 patches; block 1 keeps 32 (+1 fused), block 3 keeps round(0.5*33)=16 (+1 fused); +CLS
    assert v.tokens_per_block("simple") == [65, 34, 34, 18, 18, 18]
    attn, mlp = token_schedule(v.backbone, Level("x", keep=((0, 0.25),), fuse=False))
    assert attn[0] == 65 and mlp[0] == 17 and attn[1] == 17


def test_keep_count_bounds():
    assert keep_count(10, 0.01) == 1 and keep_count(10, 1.0) == 10 and keep_count(64, 0.75) == 48


def test_macs_by_hand_for_dense_block():
    v = get_variant("dense-deit-tiny")
    b = v.backbone
    n, d = 197, 192
    per_block = n * d * 3 * d + 2 * 3 * n * n * 64 + n * d * d + 2 * n * d * 4 * d
    stem = 196 * 3 * 16 * 16 * d
    assert v.macs("dense") == stem + b.depth * per_block + d * 100
