"""Back to fairseq: a transformers CTC directory -> a checkpoint ``load_model_ensemble_and_task`` loads.

The names are the forward rules reversed (:mod:`wmap.reverse`); fairseq's own
loader is what checks them (its layout is known only by building its model).
The config is a tree (:mod:`wmap.config_back`) of the same field tables the forward
direction reads (``wav2vec2_encoder_fields``), read back, and the few values they do not
say, with slots for what the feature extractor and the file's folder give. The
fine-tuning task reads its dictionary from ``dict.ltr.txt``, which is written
beside the checkpoint from the directory's ``vocab.json`` (the blank swap
undone), and the task's ``data`` points there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
from returns.result import Result
from transformers import PretrainedConfig

from wmap.config_back import Back, Holds, Merged, Picked, Slot, filled, written
from wmap.config_fields import Checked, ConfigTable, Field, inverse
from wmap.errors import BadConfig
from wmap.fairseq.config import CTC_FINE_TUNING, WRAPPER_REPLACES, wav2vec2_encoder_fields
from wmap.fairseq.dictionary import FAIRSEQ_GLOBAL, Dictionary, dict_file_text, saved_fields
from wmap.fairseq.processor import FEATURES, VOCAB, Features, feature_settings, vocabulary_dictionary
from wmap.io import PickledAs
from wmap.models.base import Exporter, ExportSource
from wmap.plan import MakeRule
from wmap.reverse import predicted_layout, unrecoverable_names
from wmap.transforms import Layout, weight_norm_hook_names
from wmap.values import Zeros

DICTIONARY = "dict.ltr.txt"


def inverted(fields: tuple[Field, ...]) -> dict[str, str]:
    """transformers field -> fairseq field: a forward table's translated fields, inverted."""
    return {f.source: str(f.target) for f in inverse(fields)}


TRANSLATED_BACK = inverted(wav2vec2_encoder_fields())


def encoder_back(name: str, fields: tuple[Field, ...] = (), extra: Any = None, of: str = "") -> Merged:
    """fairseq's encoder config (``cfg.model``, or ``w2v_args.model``) as the way back writes it: the
    family's forward ``fields`` (default: ``wav2vec2_encoder_fields()``) read back (of the config's
    attribute ``of``), the model's registered ``name``, and ``extra`` (a part of the tree:
    :mod:`wmap.config_back`), what a family's config spells otherwise."""
    return Merged(Back(fields or wav2vec2_encoder_fields(), of), {"_name": name}, extra or {})


FAIRSEQ_HOLDS = Holds(
    ConfigTable(
        "config.json",
        (
            Checked(
                "feat_proj_layer_norm",
                (True,),
                "fairseq's wav2vec2-family models always normalise the features before the projection",
                True,
            ),
        ),
    )
)
"""What fairseq's wav2vec2-family models can hold of a transformers config (the way back's check): a
``HubertConfig`` can turn the features' layer norm off (``feat_proj_layer_norm: false``, as
DistilHuBERT's), which fairseq cannot represent; refused, naming the field."""


def with_mask_embedding(layout: dict[str, tuple[int, ...]], config: PretrainedConfig) -> dict[str, tuple[int, ...]]:
    """fairseq's wav2vec2-family models always hold ``mask_emb`` (under the encoder's prefix); a
    transformers model holds ``masked_spec_embed`` only where its config masks. The original's layout
    gets it either way, so that the plan maps it or makes it (:func:`mask_embedding`)."""
    conv = next((k for k in layout if k.endswith("feature_extractor.conv_layers.0.0.weight")), None)
    prefix = "" if conv is None else conv[: -len("feature_extractor.conv_layers.0.0.weight")]
    return {**layout, f"{prefix}mask_emb": layout.get(f"{prefix}mask_emb", (int(config.hidden_size),))}


def mask_embedding(config: PretrainedConfig) -> tuple[MakeRule, ...]:
    """Where the directory has no ``masked_spec_embed`` (its config masks nothing), the way back makes
    fairseq's ``mask_emb`` as zeros: fairseq uses it only to mask in training, and its loader needs it."""
    reason = "fairseq's mask embedding (training only): the transformers config masks nothing, so it holds none"
    return (MakeRule("mask_emb", Zeros((int(config.hidden_size),)), reason),)


@attrs.frozen
class ZeroHeads:
    """Pre-training heads the original's model builds and the transformers model lacks (HuBERT's for
    no label sets, data2vec-audio's regression head): ``shapes(config)`` gives their names and shapes,
    which the way back adds to the original's layout (:meth:`layout`) and makes as zeros, with
    ``reason``, beside the mask embedding (:meth:`made`); hooks of :func:`trainer_exporter`."""

    shapes: Callable[[PretrainedConfig], dict[str, tuple[int, ...]]]
    reason: str

    def layout(self, source: ExportSource) -> dict[str, tuple[int, ...]]:
        """fairseq's names, and the heads."""
        return {**fairseq_layout(source), **self.shapes(source.config)}

    def made(self, config: PretrainedConfig) -> tuple[MakeRule, ...]:
        """The mask embedding fairseq always holds, and the heads as zeros."""
        heads = (MakeRule(key, Zeros(shape), self.reason) for key, shape in self.shapes(config).items())
        return (*mask_embedding(config), *heads)


def nothing_made(config: PretrainedConfig) -> tuple[MakeRule, ...]:
    """For an original that holds no mask embedding (data2vec 2.0's): the way back makes nothing."""
    return ()


DATA = Slot("the data directory fairseq's tasks read: the folder the file is written to")
"""Where an exported ``cfg`` names the data directory (a task's ``data``, a CTC wrapper's); filled by
:func:`trainer_file` when the file's folder is known."""

NORMALIZE = Slot("whether the model was fed normalised audio: the feature extractor's do_normalize")
SAMPLE_RATE = Slot("the audio's rate: the feature extractor's sampling_rate")
"""Where an exported ``cfg`` names the feature extractor's settings; filled by :func:`trainer_exporter`."""

NO_OPTIMIZER = {"optimizer_name": "none", "lr_scheduler_state": {}, "num_updates": 0}
"""An optimizer history entry of a file no optimizer has stepped (its criterion beside it)."""


CFG = Slot("the file's cfg")
STATE = Slot("the model's state dict")
CRITERION = Slot("the criterion the trainer ran")

TRAINER_FILE = {
    "args": None,
    "cfg": CFG,
    "model": STATE,
    "optimizer_history": [{"criterion_name": CRITERION, **NO_OPTIMIZER}],
    "extra_state": {"train_iterator": {"epoch": 1}},
}
"""What fairseq's loader expects around a model: the ``cfg``, the state dict, an optimizer history
(``_upgrade_state_dict`` reads it) and the iterator's state; no optimizer state."""


def trainer_file(cfg: Mapping[str, Any], state: Mapping[str, Any], criterion: str, data: Path) -> dict[str, Any]:
    """:data:`TRAINER_FILE` of ``cfg`` (its :data:`DATA` slots filled with ``data``, the folder the file is
    written to), ``state`` and ``criterion``."""
    slots = {CFG: filled(cfg, {DATA: str(data)}), STATE: dict(state), CRITERION: criterion}
    return dict(filled(TRAINER_FILE, slots))


def fairseq_layout(
    source: ExportSource,
    unrecoverable: Iterable[str] = (),
    *,
    mask: bool = True,
    encoder: PretrainedConfig | None = None,
) -> dict[str, tuple[int, ...]]:
    """fairseq's names (the rules reversed, weight norm as its hooks name it), the mask embedding its
    wav2vec2-family models always hold (``mask``; as wide as ``encoder``, by default the directory's
    config: a composite's encoder otherwise), and the keys the forward rules skipped (named, not
    recovered: the plan says so)."""
    layout = dict(weight_norm_hook_names(predicted_layout(source.pipeline, source.converted)))
    named = {name: () for name in unrecoverable}
    masked = with_mask_embedding(layout, encoder or source.config) if mask else layout
    return {**masked, **named}


def audio_task(name: str, **fields: Any) -> dict[str, Any]:
    """A fairseq audio task's config: its name, the normalisation and rate of the features
    (:data:`NORMALIZE`, :data:`SAMPLE_RATE`), and its data directory (:data:`DATA`)."""
    return {"_name": name, "normalize": NORMALIZE, "sample_rate": SAMPLE_RATE, "data": DATA, **fields}


FAIRSEQ_CHECKPOINT = "a fairseq checkpoint (load_model_ensemble_and_task reads it)"


def _as_is(state: Mapping[str, Any], cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    return state


def trainer_exporter(
    cfg: Any,
    criterion: str,
    describes: str = FAIRSEQ_CHECKPOINT,
    *,
    layout: Callable[[ExportSource], dict[str, tuple[int, ...]]] = fairseq_layout,
    checked: Callable[[PretrainedConfig], Result[PretrainedConfig, BadConfig]] = FAIRSEQ_HOLDS,
    tensors: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]] = _as_is,
    made: Callable[[PretrainedConfig], tuple[MakeRule, ...]] = mask_embedding,
    leaves_out: str = "",
) -> Exporter:
    """A fairseq family's way back, as fairseq's trainer writes its files (:func:`trainer_file`):
    ``cfg`` is the tree of the file's ``cfg`` (``model`` and ``task``: :mod:`wmap.config_back`), written
    for the directory's config (once ``checked`` accepts it: by default :data:`FAIRSEQ_HOLDS`),
    its feature extractor's settings in :data:`NORMALIZE` and :data:`SAMPLE_RATE`, and :data:`DATA`
    where it names the data directory; ``criterion`` the one the trainer ran.
    ``layout``: the original's names (:func:`fairseq_layout`); ``tensors(state, cfg)``: the state dict
    with what fairseq's holds beyond the rules (a decoder's format marker); ``made``: what the way back
    makes (:func:`mask_embedding`). A fine-tuned family's file also carries its labels: :func:`with_dictionary`."""

    def original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
        def meta(features: Features) -> tuple[Layout, dict[str, Any]]:
            normalize, rate = features
            return layout(source), {
                "cfg": filled(written(cfg, source.config), {NORMALIZE: normalize, SAMPLE_RATE: rate})
            }

        return checked(source.config).bind(lambda _: feature_settings(source.files)).map(meta)

    def container(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
        return trainer_file(meta["cfg"], tensors(state, meta["cfg"]), criterion, where.parent)

    return Exporter(original, container, describes, (FEATURES,), made=made, leaves_out=leaves_out)


def with_dictionary(exporter: Exporter) -> Exporter:
    """A fine-tuned family's way back: ``exporter``'s, with the label dictionary (from ``vocab.json``, the
    blank swap undone) in the file's ``task_state``, as fairseq's trainer keeps it (the task then reads no
    ``dict.ltr.txt``), and as ``dict.ltr.txt`` beside the file."""

    def original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
        def labelled(found: tuple[Layout, dict[str, Any]], dictionary: Dictionary) -> tuple[Layout, dict[str, Any]]:
            return found[0], {**found[1], DICTIONARY: dictionary}

        return Result.do(
            labelled(found, dictionary)
            for found in exporter.original(source)
            for dictionary in vocabulary_dictionary(source.files[VOCAB], int(source.config.vocab_size))
        )

    def container(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
        labels = PickledAs(FAIRSEQ_GLOBAL, saved_fields(meta[DICTIONARY]))
        return {**exporter.container(state, meta, where), "task_state": {"target_dictionary": labels}}

    return attrs.evolve(
        exporter,
        original=original,
        container=container,
        describes=f"{exporter.describes} and {DICTIONARY} beside it",
        reads=(VOCAB, *exporter.reads),
        companions=lambda meta: {DICTIONARY: dict_file_text(meta[DICTIONARY])},
    )


def pretraining_exporter(
    encoder_name: str,
    fields: tuple[Field, ...],
    extra: Any = None,
    criterion: str = "Wav2vecCriterion",
    leaves_out: str = "",
    *,
    heads: ZeroHeads | None = None,
    tensors: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]] = _as_is,
) -> Exporter:
    """The way back for a pre-trained wav2vec2-style family: its model config (:func:`encoder_back` of
    ``fields`` and ``extra``), the ``audio_pretraining`` task. Keys the forward direction skipped are
    unrecoverable (the plan names them) unless ``heads`` makes them (data2vec-audio's regression head);
    ``tensors`` as for :func:`trainer_exporter` (data2vec-audio's EMA teacher)."""
    cfg = {"model": encoder_back(encoder_name, fields, extra), "task": audio_task("audio_pretraining")}
    named, made = (heads.layout, heads.made) if heads else (unrecoverable_layout, mask_embedding)
    return trainer_exporter(cfg, criterion, layout=named, tensors=tensors, made=made, leaves_out=leaves_out)


def unrecoverable_layout(source: ExportSource) -> dict[str, tuple[int, ...]]:
    """fairseq's names (:func:`fairseq_layout`) and the keys the forward rules skipped, named."""
    return fairseq_layout(source, unrecoverable_names(source.pipeline))


def ctc_cfg(
    model_name: str,
    encoder: Any,
    pretraining_task: str = "audio_pretraining",
    task_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``cfg`` tree of a fine-tuned (CTC) file: the wrapper ``model_name`` around ``encoder`` (its
    tree, in ``w2v_args.model``, with its ``pretraining_task``), the wrapper's table read back, and the
    encoder's fields the wrapper replaces (:data:`~wmap.fairseq.config.WRAPPER_REPLACES`: fairseq builds
    the encoder with the wrapper's); the ``audio_finetuning`` task on letter labels."""
    pretraining = audio_task(pretraining_task, **(task_fields or {}))
    wrapper = {"_name": model_name, "w2v_args": {"task": pretraining, "model": encoder}, "w2v_path": ""}
    files = {"normalize": NORMALIZE, "data": DATA}
    model = Merged(wrapper, files, Back(CTC_FINE_TUNING.fields), Picked(encoder, WRAPPER_REPLACES))
    return {"model": model, "task": audio_task("audio_finetuning", labels="ltr")}


def ctc_exporter(
    encoder_name: str,
    model_name: str = "wav2vec_ctc",
    pretraining_task: str = "audio_pretraining",
    unrecoverable: tuple[str, ...] = (),
    task_fields: Mapping[str, Any] | None = None,
    extra: Any = None,
    fields: tuple[Field, ...] = (),
    encoder: Any = None,
    layout: Callable[[ExportSource], dict[str, tuple[int, ...]]] | None = None,
    made: Callable[[PretrainedConfig], tuple[MakeRule, ...]] | None = None,
) -> Exporter:
    """The way back for a fine-tuned wav2vec2-style CTC family (``encoder_name``, ``model_name`` and the
    encoder's ``pretraining_task`` as fairseq registers them): :func:`ctc_cfg`. ``unrecoverable``: keys
    the original model always holds that the forward rules skip (HubertCtc's unused label embeddings),
    named by the reverse plan; ``task_fields`` and ``extra`` (a part of the tree): what the pre-training
    task and the encoder's config must spell out (nothing fills a nested config's defaults or resolves
    its interpolations); ``fields``: the encoder's forward table (default ``wav2vec2_encoder_fields()``);
    ``encoder``: the whole encoder tree, for an encoder that is not wav2vec 2.0's (data2vec 2.0's
    ``data2vec_multi``, which holds no mask embedding either); ``layout`` and ``made`` as for
    :func:`trainer_exporter` (HubertCtc's label embeddings, empty)."""
    inner = encoder_back(encoder_name, fields, extra) if encoder is None else encoder
    named = partial(fairseq_layout, unrecoverable=unrecoverable, mask=encoder is None)
    makes = made or (mask_embedding if encoder is None else nothing_made)
    cfg = ctc_cfg(model_name, inner, pretraining_task, task_fields)
    return with_dictionary(trainer_exporter(cfg, "CtcCriterion", layout=layout or named, made=makes))
