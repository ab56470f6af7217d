"""Prompt-to-prompt token alignment, on hand-checked sequences and on ComfyUI's real SD1.5 tokenizer."""

import torch
from comfyui_diffferv.editing.token_alignment import align_tokens


def test_identical_sequences_map_one_to_one():
    ids = [5, 9, 9, 3, 7]
    assert align_tokens(ids, ids).tolist() == [0, 1, 2, 3, 4]


def test_swapped_word_keeps_its_own_map():
    # BOS a woman EOS pad pad  ->  BOS a man EOS pad pad
    assert align_tokens([0, 1, 2, 9, 9, 9], [0, 1, 3, 9, 9, 9]).tolist() == [0, 1, -1, 3, 4, 5]


def test_added_words_shift_the_shared_ones():
    # BOS a woman EOS pad*4  ->  BOS an old woman with glasses EOS pad
    source = [0, 1, 2, 9, 9, 9, 9, 9]
    edit = [0, 4, 5, 2, 6, 7, 9, 9]
    assert align_tokens(source, edit).tolist() == [0, -1, -1, 2, -1, -1, 3, 4]


def test_dropped_word_leaves_no_column_without_a_source():
    # BOS a photo of a woman EOS pad  ->  BOS a photo of woman EOS pad pad: the padding aligns by position
    source = [0, 1, 2, 3, 1, 4, 9, 9]
    edit = [0, 1, 2, 3, 4, 9, 9, 9]
    assert align_tokens(source, edit).tolist() == [0, 1, 2, 3, 5, 6, 7, 7]


def test_nothing_shared():
    assert align_tokens([1, 2], [3, 4, 5]).tolist() == [-1, -1, -1]


def _ids(clip, text):
    return [token for token, _ in clip.tokenize(text)["l"][0]]


def test_real_tokenizer_examples(tiny_sd15):
    clip = tiny_sd15.clip
    source = _ids(clip, "a photo of a woman")
    edit = _ids(clip, "a photo of an old woman with glasses")
    mapping = align_tokens(source, edit)
    assert len(source) == len(edit) == 77 and mapping.shape == (77,)
    shared = mapping >= 0
    # every mapped token is the same token in both prompts
    assert all(edit[j] == source[int(mapping[j])] for j in torch.nonzero(shared).flatten().tolist())
    new_words = {edit[j] for j in torch.nonzero(~shared).flatten().tolist()}
    assert new_words == set(_ids(clip, "an old with glasses")[1:5])
    woman = _ids(clip, "woman")[1]
    assert mapping[edit.index(woman)] == source.index(woman)
    assert mapping[0] == 0  # the start token
    assert (mapping[-60:] >= 0).all()  # the padding keeps its maps


def test_prompts_with_a_textual_inversion_embedding(comfy, tmp_path):
    """ComfyUI's tokenizer puts an embedding's vectors where word ids would be ("embedding:name"): the
    prompts still encode, the embedding is applied, and it aligns with itself between the prompts."""
    from comfy_harness import build_clip
    from comfyui_diffferv.nodes.preservation_glue import encode_prompt
    from safetensors.torch import save_file

    vectors = torch.randn(2, 768, generator=torch.Generator().manual_seed(0))
    save_file({"emb_params": vectors}, tmp_path / "face_style.safetensors")
    clip = build_clip(seed=1, embedding_directory=tmp_path)
    cond, source = encode_prompt(clip, "a photo of embedding:face_style woman", "source_prompt")
    _, edit = encode_prompt(clip, "a photo of an old embedding:face_style woman", "edit_prompt")
    plain, _ = encode_prompt(clip, "a photo of face_style woman", "source_prompt")
    style = [i for i, token in enumerate(source) if token < 0]
    assert len(style) == 2 and source[style[0]] != source[style[1]]
    edit_style = [j for j, token in enumerate(edit) if token < 0]
    assert align_tokens(source, edit)[edit_style].tolist() == style
    assert cond[0][0].shape == (1, 77, 768) and not torch.equal(cond[0][0], plain[0][0])
