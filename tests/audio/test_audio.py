"""The audio modality end to end: the core's contract for sounds, chorale tokens / one-hots and
stems; SoundCTM's guided teacher, feature distance and objective; arrangement through the core's
observations (Python and MIDI files); separation's mixture operator; files written by samples and
read back, and a user's folder evaluated from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.plugin import Comparison, FieldSpec, GaussianProcess, Noise
from polydiff.testing import check_modality
from polydiff_audio import AudioModality
from polydiff_audio.modality import arrangement, chorales_dataset, sounds_dataset, transpose_augment
from polydiff_audio.music import Chorale, write_midi
from polydiff_audio.separation import mix_operator
from polydiff_audio.soundctm import GuidedTeacher, soundctm, teacher_features

pytestmark = pytest.mark.usefixtures("one_thread")

EVAL = {"n": 120, "steps": 40}  # a small metric classifier for tests
SOUND = {"name": "sounds", "n": 36, "evaluator": EVAL}
UNET = {"name": "unet", "channels": [8, 16], "emb_dim": 16, "attention": False}
TRANSFORMER = {"name": "transformer", "hidden": 16, "layers": 1, "heads": 2, "emb_dim": 16}


def test_contract_sounds(tmp_path):
    check_modality(AudioModality(), tmp_path, data=SOUND, model=UNET, n=3, steps=2, sampler="heun")


@pytest.mark.parametrize("encoding,sampler", [("tokens", "first_hitting"), ("onehot", "heun")])
def test_contract_chorales(tmp_path, encoding, sampler):
    check_modality(AudioModality(), tmp_path, data={"name": "chorales", "n_chorales": 5, "encoding": encoding},
                   model=TRANSFORMER, n=3, steps=2, sampler=sampler)


def test_contract_stems(tmp_path):
    check_modality(AudioModality(), tmp_path, data={"name": "chorale_stems", "n_chorales": 4, "length": 8, "hop": 8},
                   model=TRANSFORMER, n=2, steps=2, sampler="heun")


# -- sounds --------------------------------------------------------------------------------------

def test_sound_states_conditions_and_prior():
    mod = AudioModality()
    data = sounds_dataset(n=24, evaluator=EVAL)
    info = data.info
    assert set(data.train.tensors) == {"mel", "caption", "label"} and info["conditions"]["caption"]["kind"] == "tokens"
    assert float(data.train.tensors["mel"].abs().max()) <= 1.0
    spec = mod.prior_state(2, info, condition={"caption": "a low noisy drum hit", "omega": 2.5})
    assert spec["mel"] == (2, 64, 64) and torch.all(spec["omega"] == 2.5)
    assert torch.equal(spec["caption"][0], spec["caption"][1]) and int(spec["caption"][0, 0]) >= 2
    free = mod.prior_state(2, info)
    assert torch.all(free["caption"] == -1)  # no caption asked: the null (unconditional) caption
    with pytest.raises(ValueError, match=r"condition 'omega': expected a finite number >= 0"):
        mod.prior_state(2, info, condition={"caption": "a low noisy drum hit", "omega": "abc"})
    # numpy numbers and one value per sample; a wrong count is named, not a torch expand error
    assert mod.prior_state(2, info, condition={"omega": np.float32(3)})["omega"].tolist() == [3.0, 3.0]
    assert mod.prior_state(2, info, condition={"omega": [2, 4]})["omega"].tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match=r"condition 'omega': .* or 2 of them \(one per sample\), got \[1, 2, 3\]"):
        mod.prior_state(2, info, condition={"omega": [1, 2, 3]})
    two = np.array(["a high beep", "a low beep"])  # one caption per sample, as an array of strings
    assert not torch.equal(*mod.prior_state(2, info, condition={"caption": two})["caption"])
    for bad in (5, b"a beep", {"a": 1}, [1, 2], ["a beep"]):
        with pytest.raises(ValueError, match=r"condition 'caption': expected a string, or 2 of them"):
            mod.prior_state(2, info, condition={"caption": bad})
    with pytest.warns(UserWarning, match="never saw are read as <unk>: elephant, purple"):
        mod.prior_state(2, info, condition={"caption": "a purple elephant"})
    with pytest.raises(ValueError, match="class labels"):
        mod.prior_state(2, info, condition={"label": 3})
    with pytest.raises(ValueError, match="unknown condition"):
        mod.prior_state(2, info, condition={"colour": 1})
    labelled = sounds_dataset(n=24, conditioning="label", evaluator=EVAL).info
    assert mod.prior_state(2, labelled, condition={"label": "drum_low"})["label"].tolist() == [6, 6]
    assert mod.prior_state(2, labelled, condition={"label": np.int64(6)})["label"].tolist() == [6, 6]
    with pytest.raises(ValueError, match="unknown sound class"):
        mod.prior_state(1, labelled, condition={"label": "violin"})


class _Linear(torch.nn.Module):
    """A toy conditional 'denoiser': x0 = x * a + b * caption-present (so guidance is checkable)."""

    def forward(self, state, t, cond=None):
        present = (state["caption"] >= 1).any(1).float()[:, None, None]
        return {"mel": 0.5 * state["mel"] + present}


def test_guided_teacher_combines_conditional_and_unconditional():
    state = {"mel": torch.ones(3, 2, 4), "caption": torch.tensor([[3, 0], [3, 0], [-1, -1]]),
             "omega": torch.tensor([2.0, 4.0, 3.0])}
    out = GuidedTeacher(_Linear(), ["caption"])(state, torch.ones(3))["mel"]
    # u = 0.5, c = 1.5 for captioned samples: u + omega (c - u); a dropped caption gives u whatever omega
    assert torch.allclose(out[0], torch.full((2, 4), 2.5)) and torch.allclose(out[1], torch.full((2, 4), 4.5))
    assert torch.allclose(out[2], torch.full((2, 4), 0.5))
    no_omega = GuidedTeacher(_Linear(), ["caption"])({k: v for k, v in state.items() if k != "omega"}, torch.ones(3))
    assert torch.allclose(no_omega["mel"][0], torch.full((2, 4), 1.5))


def _unet(info, fields, **kw):
    torch.manual_seed(0)
    return AudioModality().network("unet", info, fields, channels=[8, 16], emb_dim=16, attention=False, **kw)


def test_teacher_feature_distance_is_zero_on_equal_inputs_and_grows():
    mod = AudioModality()
    info = sounds_dataset(n=12, evaluator=EVAL).info
    fields = mod.fields(info)
    net = _unet(info, fields)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    x = {"mel": torch.rand(3, 64, 64, generator=g) * 2 - 1}
    cmp = Comparison(fields, {"caption": torch.full((3, 12), -1)}, torch.full((3,), 0.002), net)
    same = teacher_features(x, {"mel": x["mel"].clone()}, cmp)
    near = teacher_features(x, {"mel": x["mel"] + 0.01}, cmp)
    far = teacher_features(x, {"mel": -x["mel"]}, cmp)
    assert same.shape == (3,) and float(same.abs().max()) < 1e-10
    assert bool((far > near).all()) and bool((near > 0).all())


def test_soundctm_objective_trains_a_student(tmp_path):
    mod = AudioModality()
    data = sounds_dataset(n=12, evaluator=EVAL)
    info, fields = data.info, mod.fields(data.info)
    teacher = _unet(info, fields)
    student = _unet(info, fields, two_time=True)
    student.load_state_dict(teacher.state_dict(), strict=False)
    obj = soundctm(fields, info, teacher=teacher, teacher_steps=2)
    batch = data.train.get_batch(torch.arange(4))
    loss, logs = obj(student, batch, Noise(4, seed=0))
    assert torch.isfinite(loss) and {"ctm", "dsm", "omega"} <= set(logs) and 2.0 <= float(logs["omega"]) <= 5.0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    with pytest.raises(ValueError, match="teacher"):
        soundctm(fields, info)
    with pytest.raises(ValueError, match="conditions"):
        soundctm(fields, {**info, "conditions": {}}, teacher=teacher)


def test_zero_initialised_student_embeddings_start_as_the_teacher():
    mod = AudioModality()
    info = sounds_dataset(n=12, evaluator=EVAL).info
    fields = mod.fields(info)
    teacher, student = _unet(info, fields), _unet(info, fields, two_time=True)
    student.load_state_dict(teacher.state_dict(), strict=False)
    x = {"mel": torch.randn(2, 64, 64), "caption": torch.full((2, 12), -1)}
    t = torch.tensor([1.0, 5.0])
    torch.testing.assert_close(student(x, t, s=t / 2)["mel"], teacher(x, t)["mel"])


# -- chorales ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chorale_data():
    return chorales_dataset(n_chorales=5)


def test_transposition_augment_is_seeded_and_keeps_rests(chorale_data):
    aug = transpose_augment(chorale_data.info)
    batch = chorale_data.train.get_batch(torch.arange(8))
    a = aug(dict(batch), torch.Generator().manual_seed(0))
    b = aug(dict(batch), torch.Generator().manual_seed(0))
    assert torch.equal(a["roll"], b["roll"]) and "shift_lo" not in a
    assert torch.equal(a["roll"] == 0, batch["roll"] == 0)  # rests stay rests
    moved = a["roll"] - batch["roll"]
    for i in range(8):  # one shift per sample, inside its range
        k = moved[i][batch["roll"][i] > 0].unique()
        assert len(k) == 1 and int(batch["shift_lo"][i]) <= int(k) <= int(batch["shift_hi"][i])


def test_arrangement_from_a_midi_file_keeps_the_given_voice(tmp_path, chorale_data):
    mod = AudioModality()
    info = chorale_data.info
    ref = mod.reference(chorale_data)[0]
    f = write_midi(Chorale(ref.tracks[:1], ("soprano",), "melody"), tmp_path / "soprano.mid")
    obs = mod.observation(f, info)
    assert obs.masks["roll"].reshape(4, -1)[0].all() and not obs.masks["roll"].reshape(4, -1)[1:].any()
    fields = mod.fields(info)
    torch.manual_seed(0)
    net = mod.network(None, info, fields, hidden=16, layers=1, heads=2, emb_dim=16).eval()
    from polydiff.plugin import Control, SampleSettings

    spec = mod.prior_state(3, info)
    out = mod.sample(net, fields, spec, SampleSettings(sampler="first_hitting", steps=8), Control(observed=obs),
                     seed=torch.arange(3), device=torch.device("cpu"))
    got = mod.to_native(out, info)
    assert all(np.array_equal(c.tracks[0], ref.tracks[0]) for c in got)
    assert all((c.tracks[1:] > 0).any() for c in got)
    # a tenor line named as such lands in the tenor row; other files are refused clearly
    tenor = arrangement(Chorale(ref.tracks[2:3], ("tenor",)), info)
    assert tenor.masks["roll"].reshape(4, -1)[2].all() and not tenor.masks["roll"].reshape(4, -1)[0].any()
    with pytest.raises(ValueError, match="arrange chorales"):
        mod.observation(f, sounds_dataset(n=12, evaluator=EVAL).info)
    five = Chorale(np.concatenate([ref.tracks, ref.tracks[:1]]), ("a", "b", "c", "d", "e"))
    with pytest.raises(ValueError, match=r"5 tracks, but the model has 4 voices"):
        arrangement(five, info)
    with pytest.raises(ValueError, match=r"two tracks are named 'soprano'"):
        arrangement(Chorale(ref.tracks[:2], ("soprano", "soprano")), info)
    long = np.concatenate([ref.tracks[:1], ref.tracks[:1]], axis=1)  # twice the model's length: the rest is cropped
    with pytest.warns(UserWarning, match="the rest is cropped"):
        arrangement(Chorale(long, ("soprano",)), info)


def test_arrangement_arguments_are_checked(tmp_path, chorale_data):
    """A MIDI path is read; a track count that differs from the names', a sounds model, bare
    arrays and fractional pitches are errors; tracks named after no voice are placed in order
    with a warning; music handed to the sampler directly points at arrangement."""
    from polydiff.plugin import Control, SampleSettings

    mod = AudioModality()
    info = chorale_data.info
    ref = mod.reference(chorale_data)[0]
    f = write_midi(Chorale(ref.tracks[:1], ("soprano",), "melody"), tmp_path / "soprano.mid")
    assert arrangement(f, info).masks["roll"].reshape(4, -1)[0].all()
    with pytest.raises(ValueError, match=r"2 tracks but 1 name\(s\) \(soprano\)"):
        arrangement(Chorale(ref.tracks[:2], ("soprano",)), info)
    with pytest.raises(ValueError, match=r"arrangement needs a chorale or stems model's info .* generates 'sound'"):
        arrangement(Chorale(ref.tracks[:1], ("soprano",)), sounds_dataset(n=12, evaluator=EVAL).info)
    with pytest.raises(TypeError, match=r"given must be a Chorale .* got ndarray"):
        arrangement(ref.tracks[:1], info)
    with pytest.raises(ValueError, match="whole numbers"):
        arrangement(Chorale(np.full((1, 32), 60.5), ("soprano",)), info)
    with pytest.warns(UserWarning, match=r"track 1 \('piano'\) as the soprano"):
        arrangement(Chorale(ref.tracks[:1], ("piano",)), info)
    spec = mod.prior_state(2, info)
    for observed, what in ((ref, "a Chorale"), (str(f), "the MIDI file")):
        with pytest.raises(ValueError, match=f"observed: {what}.* pass observed=arrangement"):
            mod.sample(None, mod.fields(info), spec, SampleSettings(sampler="first_hitting", steps=2),
                       Control(observed=observed), seed=torch.arange(2), device=torch.device("cpu"))


def test_native_types_follow_the_kind():
    from polydiff.modality import check_objects
    from polydiff_audio.modality import Stems
    from polydiff_audio.sounds import Sound

    mod = AudioModality()
    assert mod.native_types({"kind": "chorale"}) == (Chorale,) and mod.native_types({"kind": "sound"}) == (Sound,)
    assert mod.native_types({}) == (Sound, Chorale, Stems)  # a user's files without a model
    with pytest.raises(TypeError, match=r"objects\[0\]: expected a Chorale .*got int"):
        check_objects(mod, [1, 2, 3], {"kind": "chorale"})


def test_mixture_operator_adds_stem_powers():
    top = 80.0
    db = torch.tensor([-20.0, -20.0, -80.0, -80.0])  # two equal stems and two silent ones
    stems = (db / (top / 2) + 1)[None, :, None, None].expand(1, 4, 2, 3)
    mix = mix_operator(top)({"stems": stems})
    expect = 10 * np.log10(2 * 10 ** (-2.0) + 2 * 10 ** (-8.0))  # dB of the summed power
    assert torch.allclose(mix, torch.full((1, 2, 3), expect / (top / 2) + 1, dtype=mix.dtype), atol=1e-6)


# -- files ---------------------------------------------------------------------------------------

def test_sound_files_round_trip_and_evaluate_a_users_folder(tmp_path):
    from polydiff_audio.sounds import sound_events, write_sounds

    write_sounds(sound_events(8, seed=3), tmp_path / "mine")
    write_sounds(sound_events(8, seed=4), tmp_path / "ref")
    mod = AudioModality()
    got = mod.read(tmp_path / "mine")
    assert len(got) == 8 and all(s.caption for s in got)
    info = sounds_dataset(n=12, evaluator=EVAL).info
    m = mod.evaluate(got, mod.read(tmp_path / "ref"), info)
    assert {"fd", "caption_agreement", "mel_l1_db"} <= set(m) and np.isfinite(m["fd"])
    cli = str(Path(sys.executable).parent / "polydiff")
    r = subprocess.run([cli, "evaluate", str(tmp_path / "mine"), "--modality", "audio",
                        "--reference", str(tmp_path / "ref")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "fd" in r.stdout and "caption_agreement" in r.stdout


def test_read_refuses_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        AudioModality().read(tmp_path / "nothing")


def test_fields_reject_bad_kinds():
    with pytest.raises(ValueError, match="kind"):
        AudioModality().fields({"kind": "video"})
    f = AudioModality().fields({"kind": "sound"})
    assert isinstance(f["mel"], FieldSpec) and isinstance(f["mel"].process, GaussianProcess)


def test_latent_option_trains_and_decodes(tmp_path):
    """data.latent: the sound state is the autoencoder's codes; samples decode to sounds."""
    cli = str(Path(sys.executable).parent / "polydiff")
    ae = tmp_path / "ae.pt"
    r = subprocess.run([cli, "audio", "autoencoder", "--out", str(ae), "--n", "24", "--width", "16", "--steps", "20",
                        "--latent-channels", "4", "--threads", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mod = AudioModality()
    data = sounds_dataset(n=24, evaluator=EVAL, latent=str(ae))
    assert data.train.tensors["mel"].shape[1:] == (4, 32) and data.info["latent"]["frames"] == 32
    assert mod.prior_state(2, data.info)["mel"] == (2, 4, 32)
    fields = mod.fields(data.info)
    net = _unet(data.info, fields)
    out = net(data.train.get_batch(torch.arange(2)), torch.ones(2))["mel"]
    assert out.shape == (2, 4, 32)
    sounds = mod.to_native({"mel": out.detach(), "caption": data.train.tensors["caption"][:2]}, data.info)
    assert len(sounds) == 2 and sounds[0].audio.shape == (16384,)
    with pytest.raises(FileNotFoundError):
        sounds_dataset(n=24, latent=str(tmp_path / "missing.pt"))


@pytest.fixture(scope="module")
def stems_run(tmp_path_factory):
    """A stems model trained for two steps (separation's end-to-end checks)."""
    import polydiff

    recipe = {"modality": "audio", "data": {"name": "chorale_stems", "n_chorales": 4, "length": 8, "hop": 8},
              "model": TRANSFORMER,
              "loss": {"weighting": "edm", "time_density": "lognormal"},
              "train": {"max_steps": 2, "batch_size": 4, "threads": 1, "progress": False, "checkpoint_every": 2},
              "sample": {"num": 1, "sampler": "heun", "steps": 2}}
    return polydiff.train(recipe, tmp_path_factory.mktemp("stems") / "run", fresh=True, verbose=False)


def test_separate_command_writes_stems_that_sum_to_the_mixture(tmp_path, stems_run):
    import polydiff
    from polydiff_audio.modality import read_stems, tokens_to_stems, write_stems

    run = stems_run
    gen = polydiff.load(run.checkpoint)
    data = AudioModality().dataset("chorale_stems", n_chorales=4, length=8, hop=8)
    pieces = torch.cat([data.train.tensors["tokens"][:1], data.test.tensors["tokens"][:1]])
    truth = tokens_to_stems(pieces, gen.info)[::-1]  # the second piece is separated, the first is also in truth/
    write_stems(truth, tmp_path / "truth")
    mix = tmp_path / "truth" / f"{truth[0].name}_mix.wav"
    cli = str(Path(sys.executable).parent / "polydiff")
    r = subprocess.run([cli, "audio", "separate", str(run.checkpoint), str(mix), "--out", str(tmp_path / "sep"),
                        "--steps", "2", "--reference", str(tmp_path / "truth")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "si_snri" in r.stdout
    sep = read_stems(tmp_path / "sep")
    assert len(sep) == 1 and sep[0].audio.shape[0] == 4
    n = min(sep[0].audio.shape[1], truth[0].audio.shape[1])
    np.testing.assert_allclose(sep[0].audio[:, :n].sum(0), truth[0].mix[:n], atol=1e-3)  # masks on the mixture
    scores = json.loads((tmp_path / "sep" / "separation.json").read_text())["scores"]
    from polydiff_audio.music_metrics import separation_scores

    ref = truth[0].audio[:, :n]  # scored against its own piece's stems, not the folder's first piece
    mine = separation_scores(sep[0].audio[:, :n], ref.sum(0), ref, truth[0].sr)
    assert scores["si_snri"] == pytest.approx(mine["si_snri"], rel=1e-4, abs=1e-4)
    again = subprocess.run([cli, "audio", "separate", str(run.checkpoint), str(mix), "--out", str(tmp_path / "sep"),
                            "--steps", "2"], capture_output=True, text=True)  # not over the first run's stems
    assert again.returncode == 2 and "pass --overwrite" in again.stderr


def test_separate_checks_the_mixture_as_the_command_does(stems_run, tmp_path):
    """Mono samples only (stereo, stems and text refused), integer PCM scaled, no samples or NaN
    refused in one line, std > 0, a short mixture padded with the command's warning; the
    generator refuses objects other than Stems."""
    import polydiff
    from polydiff_audio.separation import separate

    gen = polydiff.load(stems_run.checkpoint)
    mix = gen.reference()[0]
    for bad, error, match in ((np.stack([mix.mix, mix.mix]), ValueError, r"mono audio of shape \(n_samples,\), got "
                                                                          r"shape \(2, "),
                              (mix, TypeError, "got Stems: pass its mixture, stems.mix"),
                              (np.zeros(0), ValueError, "mix has no samples"),
                              (np.full(100, np.nan), ValueError, "mix: 100 of 100 samples are NaN or infinite")):
        with pytest.raises(error, match=match):
            separate(gen, bad, steps=2)
    with pytest.raises(ValueError, match="std must be a positive number"):
        separate(gen, mix.mix, std=0)
    pcm = np.round(np.clip(mix.mix, -1, 1) * 16384).astype(np.int16)
    with pytest.warns(UserWarning, match=r"mix: the mixture is .* padded with .* of silence"):
        short, _ = separate(gen, pcm[:1000], steps=2)
    with pytest.warns(UserWarning, match="padded"):
        as_float, _ = separate(gen, pcm[:1000] / 32768, steps=2)
    np.testing.assert_allclose(short, as_float, atol=1e-6)  # int16 PCM is scaled, not taken as amplitudes
    with pytest.raises(TypeError, match=r"objects\[0\]: expected a Stems .*got int"):
        gen.evaluate([1, 2])


def test_omega_on_a_one_time_network_is_an_error_not_ignored():
    from polydiff.plugin import Control, SampleSettings

    mod = AudioModality()
    info = sounds_dataset(n=24, evaluator=EVAL).info
    fields = mod.fields(info)
    spec = mod.prior_state(2, info, condition={"caption": "a low noisy drum hit", "omega": 3.0})
    with pytest.raises(ValueError, match=r"only a SoundCTM student .* takes a guidance strength omega"):
        mod.sample(_unet(info, fields), fields, spec, SampleSettings(steps=2), Control(), seed=torch.arange(2),
                   device=torch.device("cpu"))


def test_a_sounds_vocoder_phase_comes_from_its_seed_not_its_place_in_the_chunk():
    """Griffin-Lim's initial phase is drawn from each sample's seed (the state's vocoder_seed), so
    a sound is the same whatever the batch size or --processes (it was the index in the chunk)."""
    from polydiff_audio.modality import VOCODER_SEED

    mod = AudioModality()
    info = sounds_dataset(n=24, evaluator=EVAL).info
    mel = torch.rand(1, 64, 64) * 2 - 1
    two = {"mel": mel.expand(2, -1, -1), "caption": torch.zeros(2, int(info["caption_length"]), dtype=torch.long)}
    first = mod.to_native({**two, VOCODER_SEED: torch.tensor([5, 7])}, info)
    swapped = mod.to_native({**two, VOCODER_SEED: torch.tensor([7, 5])}, info)
    assert np.array_equal(first[0].audio, swapped[1].audio) and np.array_equal(first[1].audio, swapped[0].audio)
    assert not np.array_equal(first[0].audio, first[1].audio)  # the seed does decide the phase
