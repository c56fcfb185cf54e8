"""Stage 1: the Q-Former and projector learn to name what a clip shows in the LLM's word space."""
import pytest
import torch

from helpers import DEFAULTS
from videonarrator.model import VideoNarratorConfig, VisualEncoder
from videonarrator.pretrain import ClipValues, PretrainConfig, accuracy, pretrain_visual, query_groups, value_embeddings

KINDS = ("colour", "shape")
VOCAB = (("red", "green", "blue"), ("round", "square"))
P, W, D = 4, 8, 16


def encoder(seed=0, queries=4) -> VisualEncoder:
    torch.manual_seed(seed)
    cfg = VideoNarratorConfig(vision_width=W, num_patches=P, qformer_hidden=16, qformer_layers=2, qformer_heads=2,
                              num_query_tokens=queries, patch_pos_embed=True, memory_frames=1, story_clips=None,
                              label_head=False, llm_dim=D)
    return VisualEncoder(cfg)


def clips(n: int, seed: int, shuffle_values: bool = False) -> ClipValues:
    """Clips whose patch tokens carry their values: patch 0 codes the colour, patch 1 the shape (plus
    noise); ``shuffle_values`` pairs the frames with another clip's values (nothing to learn)."""
    g = torch.Generator().manual_seed(seed)
    values = torch.stack([torch.randint(3, (n,), generator=g), torch.randint(2, (n,), generator=g)], dim=1)
    codes = torch.randn(5, W, generator=torch.Generator().manual_seed(99))
    frames = []
    for colour, shape in values.tolist():
        x = 0.3 * torch.randn(1, P, W, generator=g)
        x[0, 0] += 2 * codes[colour]
        x[0, 1] += 2 * codes[3 + shape]
        frames.append(x)
    if shuffle_values:
        values = values[torch.randperm(n, generator=g)]
    return ClipValues(frames, values, KINDS, VOCAB)


def words(phrase: str) -> torch.Tensor:
    """A stand-in for the LLM's word embeddings: a fixed random vector per phrase (two tokens)."""
    seed = sum(map(ord, phrase))
    return torch.randn(2, D, generator=torch.Generator().manual_seed(seed))


CFG = PretrainConfig(steps=150, lr=3e-3, batch_size=16, seed=0)


def test_query_groups_split_the_queries_in_order_and_share_when_there_are_few():
    assert query_groups(8, 4) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert query_groups(5, 2) == [[0, 1, 2], [3, 4]]
    assert query_groups(2, 4) == [[0], [1], [0], [1]]


def test_stage_one_learns_what_the_frames_show_and_nothing_when_they_show_nothing():
    visual = encoder()
    before = accuracy(visual, value_embeddings(clips(1, 0), words), clips(200, 2))
    report = pretrain_visual(visual, clips(200, 1), words, CFG, val=clips(200, 2), progress=False)
    assert report["final_loss"] < 0.3 * report["first_loss"]
    assert report["val_acc"]["colour"] > 0.9 and report["val_acc"]["shape"] > 0.9 > max(before.values())
    # frames paired with other clips' values: it may memorise the training clips, but cannot name unseen ones
    control = pretrain_visual(encoder(), clips(200, 1, shuffle_values=True), words, CFG, val=clips(200, 2),
                              progress=False)
    assert control["val_acc"]["colour"] < 0.55 and control["val_acc"]["shape"] < 0.7


def test_stage_one_is_seeded_and_leaves_the_clip_position_embedding_to_the_llm_steps():
    a, b = encoder(), encoder()
    position = a.clip_pos.weight.detach().clone()
    short = PretrainConfig(steps=5, lr=3e-3, batch_size=8, seed=0)
    for visual in (a, b):
        torch.manual_seed(1)   # the Q-Former's dropout draws from torch's seed, which training sets
        pretrain_visual(visual, clips(40, 1), words, short, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(a.clip_pos.weight, position)
    assert not torch.equal(a.projector.weight, encoder().projector.weight)   # the projector learns the words


def test_stage_one_without_values_says_what_to_set():
    with pytest.raises(ValueError, match="train.qformer_steps: 0"):
        pretrain_visual(encoder(), ClipValues([], torch.zeros(0, 2, dtype=torch.long), KINDS, VOCAB), words, CFG)


def test_value_targets_read_the_generator_truth_of_every_clip(tiny_prepared, tmp_path):
    from dataclasses import replace

    from videonarrator.data.synthetic import VISUAL_ATTRS, VISUAL_VOCAB
    from videonarrator.dataset import value_targets
    from videonarrator.features import extract_features

    processed, videos, _ = tiny_prepared
    extract_features(videos, processed, tmp_path / "features", DEFAULTS.tower(), progress=False)
    data = value_targets(videos, tmp_path / "features", 0.9)
    assert len(data) == sum(len(v.clips) for v in videos) and data.kinds == VISUAL_ATTRS
    first = videos[0].clips[0]
    assert [VISUAL_VOCAB[k][i] for k, i in zip(VISUAL_ATTRS, data.values[0].tolist())] == \
        [first.truth[k] for k in VISUAL_ATTRS]
    assert data.frames[0].shape[1:] == (64, 64)
    real = [replace(v, clips=[replace(c, truth={}) for c in v.clips]) for v in videos]   # no truth: real data
    assert len(value_targets(real, tmp_path / "features", 0.9)) == 0
