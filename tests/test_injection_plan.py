"""The sampler's injection decisions (editing/injection_plan.py), without ComfyUI: which roles take which
features at which steps, how the source features reach them for each source path, what the source path
records, and the kinds of UNet call ComfyUI's estimate is told about."""

import torch
from comfyui_diffferv.attention.feature_store import Feature
from comfyui_diffferv.attention.memory import UNetCall
from comfyui_diffferv.editing.identity import FROM_STORE, IN_BATCH, SEPARATE
from comfyui_diffferv.editing.injection_plan import NEVER, SOURCE_ROLE, plan_injection
from comfyui_diffferv.editing.preservation import appearance_steps

TIMESTEPS = torch.tensor([1.0, 201.0, 401.0, 601.0, 801.0])
SOURCE, EDIT, NEGATIVE = [49406, 320, 1125, 49407], [49406, 320, 1128, 1125, 49407], [49406, 49407]
HELD = 1000


def plan(path=IN_BATCH, tau_app=0.5, motion=True, semantic=True):
    return plan_injection(TIMESTEPS, tau_app, motion, semantic, SOURCE, EDIT, NEGATIVE, path, HELD)


def test_nothing_injected_is_a_plain_sampling():
    plain = plan(tau_app=0.0, motion=False, semantic=False)
    assert plain.roles == {} and plain.in_batch_roles is None and plain.features == ()
    assert plain.calls == (UNetCall(chunks=2), UNetCall(chunks=1))


def test_each_role_takes_appearance_at_tau_app_steps_motion_and_semantics_at_every_step():
    full = plan()
    assert set(full.roles) == {"edit", "negative"}
    for role in full.roles.values():
        assert role.source is None  # from the store
        assert role.swcfa_steps == appearance_steps(TIMESTEPS, 0.5) == frozenset({3, 4})
        assert role.tta_steps is None and role.cross_steps is None  # every step
    assert full.roles["edit"].token_map.tolist() != full.roles["negative"].token_map.tolist()
    quiet = plan(motion=False, semantic=False)
    assert all(
        r.tta_steps == NEVER and r.cross_steps == NEVER and r.token_map is None for r in quiet.roles.values()
    )
    assert quiet.features == (Feature.SELF_QK,)
    assert plan(tau_app=0.0, motion=False).features == (Feature.CROSS_MAPS,)


def test_the_source_path_decides_where_the_features_come_from_and_the_calls():
    batch, separate, store = plan(IN_BATCH), plan(SEPARATE), plan(FROM_STORE)
    assert {r.source for r in batch.in_batch_roles.values()} == {SOURCE_ROLE}
    assert batch.features == (Feature.SELF_QK, Feature.CROSS_MAPS)
    assert batch.calls == (UNetCall(3), UNetCall(2, held_per_frame=HELD), UNetCall(1, held_per_frame=HELD))
    assert separate.in_batch_roles is None and separate.features == batch.features
    assert separate.calls == (UNetCall(2, held_per_frame=HELD), UNetCall(1, held_per_frame=HELD))
    assert store.in_batch_roles is None and store.features == ()
    assert store.calls == (UNetCall(2, cached_source=True), UNetCall(1, cached_source=True))
