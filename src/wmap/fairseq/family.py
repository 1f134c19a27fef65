"""A fairseq wav2vec 2.0-style family from one description (:class:`Wav2Vec2Style`): the encoder's
field overrides, the layer rules and the transformers classes; from it the pre-trained spec and the
CTC spec with its processor, both ways. The blocks it is made of (the encoder's fields with or
without the quantizer, the pre-training and CTC rules, the two configs) are public for families that
differ more (HuBERT's heads, data2vec's encoder).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import attrs
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig

from wmap.config_back import Made, Merged
from wmap.config_fields import (
    Checked,
    ConfigTable,
    Field,
    Ignored,
    IgnoredField,
    Joint,
    SectionReader,
    Translated,
    Translation,
    ValueMap,
    boolean,
    fixed_back,
    integer,
    left_behind,
    number,
    one_of,
)
from wmap.errors import BadConfig
from wmap.fairseq.config import (
    CTC_FINE_TUNING,
    ctc_fine_tuning,
    ctc_head_kwargs,
    encoder_config_kwargs,
    fine_tuned,
    layout_agrees,
    pre_trained,
    wav2vec2_encoder_fields,
)
from wmap.fairseq.dictionary import STAND_INS
from wmap.fairseq.export import ctc_exporter, pretraining_exporter
from wmap.fairseq.processor import ctc_processor, feature_extractor_writer
from wmap.fairseq.rules import (
    PRETRAINING_HEADS,
    TRANSFORMER_LAYERS,
    Makes,
    identity_projection,
    wav2vec2_encoder_rules,
    with_upgrades,
)
from wmap.models.base import (
    Exporter,
    Extras,
    ModelClass,
    ModelSpec,
    TranslatedConfig,
    class_name,
    is_headless,
    no_extras,
    shipped,
)
from wmap.pipeline import first_match, scoped, seq
from wmap.transforms import EXACT, PARAMS, Layout, Transform, refuse, rename, route_weight_norm

ONE_POS_CONV = Checked(
    "pos_conv_depth",
    (1,),
    "transformers' wav2vec2-family encoders have one weight-norm positional conv",
    1,
    integer(1, 64),
)


TRANSFORMER_LAYER_TYPE = Checked(
    "layer_type",
    ("transformer",),
    "Wav2Vec2 has transformer layers; a wav2vec 2.0 conformer converts with wav2vec2_conformer[_ctc]",
    "transformer",
    one_of("transformer", "conformer", "trf_adp"),
)


def projection_sizes(values: Mapping[str, Any]) -> dict[str, int]:
    """The quantizer's and projections' sizes of a ``...ForPreTraining`` config (fairseq's 0 means the
    encoder's width)."""
    final_dim: int = values["final_dim"] or values["encoder_embed_dim"]
    return {"codevector_dim": values["latent_dim"] or final_dim, "proj_codevector_dim": final_dim}


def projection_sizes_back(config: Any) -> dict[str, int]:
    return {"latent_dim": int(config.codevector_dim), "final_dim": int(config.proj_codevector_dim)}


QUANTIZER_FIELDS: tuple[Field, ...] = (
    Joint("final_dim", integer(0, 65536), projection_sizes, projection_sizes_back, 0),
    Translated("latent_vars", integer(1, 65536), "num_codevectors_per_group", 320),
    Translated("latent_groups", integer(1, 64), "num_codevector_groups", 2),
    Translated("latent_dim", integer(0, 65536), None, 0),
    Ignored("latent_temp", "the gumbel temperature schedule: training only (in eval the quantizer takes the argmax)"),
    Translated("num_negatives", integer(0, 100_000), "num_negatives", 100),
    Translated("logit_temp", number(1e-6, 1e6), "contrastive_logits_temperature", 0.1),
    Checked("quantize_targets", (True,), "Wav2Vec2ForPreTraining always quantizes its targets", False, boolean),
    Checked("quantize_input", (False,), "Wav2Vec2ForPreTraining quantizes targets only", False, boolean),
    Checked("target_glu", (False,), "Wav2Vec2ForPreTraining has no GLU on its targets", False, boolean),
    Checked("quantizer_depth", (1,), "Wav2Vec2ForPreTraining's quantizer is one linear layer", 1, integer(1, 64)),
)
"""The pre-training fields a ``...ForPreTraining`` target carries (the quantizer, the projections, the
contrastive loss's settings), read where the shared table ignores them as the objective's."""


def encoder_fields(*, pretraining: bool, **overrides: Field) -> tuple[Field, ...]:
    """fairseq's ``Wav2Vec2Config``: for pre-training the quantizer's fields are translated
    (:data:`QUANTIZER_FIELDS`: the target has the quantizer), else they belong to the objective the
    fine-tuned encoder no longer has. ``overrides`` as in :func:`~wmap.fairseq.wav2vec2_encoder_fields`."""
    quantizer = {f.source: f for f in QUANTIZER_FIELDS} if pretraining else {}
    fixed = {"pos_conv_depth": ONE_POS_CONV, "layer_type": TRANSFORMER_LAYER_TYPE}
    return wav2vec2_encoder_fields(**{**quantizer, **fixed, **overrides})


def _nothing(read: Translation) -> dict[str, Any]:
    return {}


Agrees = Callable[[str, Layout, Translation, str], BadConfig | None]
"""(section, the file's layout, the encoder's translation, the encoder's prefix in the file): a family's
own check of its config against its file (:func:`~wmap.fairseq.adapters.adapters_agree`), ``None`` when
they agree."""


def _agrees(section: str, layout: Layout, read: Translation, root: str) -> BadConfig | None:
    return None


@attrs.frozen
class EncoderConfig:
    """How a wav2vec2-style family reads its encoder's config: the section (``section``: fairseq's
    ``cfg.model`` by default, :func:`~wmap.config_fields.section_at` for another tool's file) read with
    ``table``, plus ``extra(read)`` (the family's own keyword arguments), checked against the file's
    layers under ``root`` (the conv layers' field: ``conv_field``) and by ``agrees``, made a
    ``config_class``. Called, it is a spec's ``config_from_checkpoint``; shared by every fairseq-named
    family (wav2vec2, HuBERT, data2vec-audio, WavLM, s3prl's distiller, the xm_transformer's encoder)."""

    table: ConfigTable
    config_class: type[PretrainedConfig]
    section: SectionReader = pre_trained
    extra: Callable[[Translation], dict[str, Any]] = _nothing
    agrees: Agrees = _agrees
    root: str = ""
    conv_field: str = ""

    def __call__(self, meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
        return self.section(meta, self.table).bind(partial(self.built, layout=layout))

    def kwargs(self, read: Translation, layout: Layout) -> Result[dict[str, Any], BadConfig]:
        """The target config's keyword arguments, once the file's layers agree with them."""
        kwargs = {**encoder_config_kwargs(read), **self.extra(read)}
        section, root = self.table.section, self.root
        wrong = layout_agrees(section, layout, kwargs, root, self.conv_field) or self.agrees(
            section, layout, read, root
        )
        return Failure(wrong) if wrong else Success(kwargs)

    def built(self, read: Translation, layout: Layout) -> Result[TranslatedConfig, BadConfig]:
        """The target config of a translation, with the fields it left behind."""
        return self.kwargs(read, layout).map(partial(self.made, ignored=read.ignored))

    def made(self, kwargs: Mapping[str, Any], ignored: tuple[IgnoredField, ...]) -> TranslatedConfig:
        """``config_class`` of ``kwargs``, with the fields the translation left behind."""
        return TranslatedConfig(self.config_class(**kwargs), ignored)


FINE_TUNED_ROOT = "w2v_encoder.w2v_model."
"""Where a fine-tuned (CTC) fairseq file keeps the pre-trained encoder."""


@attrs.frozen
class FineTunedConfig:
    """A fine-tuned (CTC) fairseq wav2vec2-style file's config: the CTC wrapper (``wrapper``) and the
    encoder in ``w2v_args.model`` (``encoder``'s table, extra keyword arguments and checks; the file
    keeps it under :data:`FINE_TUNED_ROOT`), every bad field of both in one error, the head sized from
    the file. Called, it is a spec's ``config_from_checkpoint``."""

    encoder: EncoderConfig
    wrapper: ConfigTable = CTC_FINE_TUNING

    def __call__(self, meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
        return fine_tuned(meta, self.encoder.table, self.wrapper).bind(partial(self.built, layout=layout))

    def built(self, both: tuple[Translation, Translation], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
        """The target config: the encoder's keyword arguments (checked under the root) and the head's."""
        outer, encoder = both
        return Result.do(
            self.encoder.made({**kwargs, **head}, left_behind(both))
            for kwargs in attrs.evolve(self.encoder, root=FINE_TUNED_ROOT).kwargs(encoder, layout)
            for head in ctc_head_kwargs(outer, layout)
        )


def constant(values: Mapping[str, Any]) -> Callable[[Translation], dict[str, Any]]:
    """An ``extra`` that always adds ``values`` (the keyword arguments a family always sets)."""
    return partial(_constant, values)


def _constant(values: Mapping[str, Any], read: Translation) -> dict[str, Any]:
    return dict(values)


STACKED = "a stack of positional convs (fairseq pos_conv_depth > 1); {target} has one weight-norm conv"


def encoder_rules(
    config: PretrainedConfig, target: str, layers: tuple[Transform, ...] = TRANSFORMER_LAYERS
) -> tuple[Transform, ...]:
    """The encoder's rules (:func:`wmap.fairseq.wav2vec2_encoder_rules`, with ``layers``) and the refusal
    of a stacked positional conv, whose keys (``encoder.pos_conv.N.0``) the single conv's rule does not take."""
    return (
        *wav2vec2_encoder_rules(config, layers=layers),
        refuse("encoder.pos_conv", STACKED.format(target=target)),
    )


QUANTIZER = (
    rename("quantizer.vars", "quantizer.codevectors", EXACT),
    rename("quantizer.weight_proj", "quantizer.weight_proj", PARAMS),
    rename("project_q", "project_q", PARAMS),
    rename("final_proj", "project_hid", PARAMS),
)
"""wav2vec 2.0's pre-training heads, which Wav2Vec2ForPreTraining has at its top level."""


def pretraining_rules(
    config: PretrainedConfig, base: str, target: str, layers: tuple[Transform, ...] = TRANSFORMER_LAYERS
) -> Transform:
    """Pre-trained checkpoint -> a ``...ForPreTraining``: the encoder (its ``layers``) under ``base``,
    the quantizer and projections on top."""
    encoder = with_upgrades(first_match(target, encoder_rules(config, target, layers)))
    return seq(first_match(f"{target} pre-training", (*QUANTIZER, scoped("", base, encoder))), route_weight_norm())


def ctc_rules(
    config: PretrainedConfig,
    base: str,
    target: str,
    heads: tuple[Transform, ...] = PRETRAINING_HEADS,
    layers: tuple[Transform, ...] = TRANSFORMER_LAYERS,
) -> Transform:
    """Fine-tuned checkpoint -> a wav2vec2-family ``...ForCTC``: the encoder (its ``layers``) under
    ``base``, ``lm_head``; the pre-training ``heads`` a fine-tuned file may still carry are skipped."""
    encoder = with_upgrades(first_match(target, (*encoder_rules(config, target, layers), *heads)))
    return seq(
        first_match(
            f"{target} CTC",
            (rename("w2v_encoder.proj", "lm_head", PARAMS), scoped("w2v_encoder.w2v_model", base, encoder)),
        ),
        route_weight_norm(),
    )


POSITIONS = ValueMap(
    (("rel_pos", "relative"), ("rope", "rotary")),
    "relative or rotary positions in the attention; transformers' conformer has no absolute ('abs') kind",
)
"""fairseq's ``pos_enc_type`` <-> transformers' ``position_embeddings_type``."""

ADAPTERS = "setting of adapter layers (layer_type 'trf_adp'), which conformer layers do not use"

CONFORMER_FIELDS: Mapping[str, Field] = {
    "layer_type": Checked(
        "layer_type",
        ("conformer",),
        "this family's target has conformer layers; transformer layers convert with wav2vec2[_ctc]",
        "transformer",
        one_of("transformer", "conformer", "trf_adp"),
    ),
    "activation_fn": Ignored("activation_fn", "fairseq's conformer layers use swish whatever it says"),
    "layer_norm_first": Checked(
        "layer_norm_first",
        (True,),
        "fairseq's conformer normalises before the layers when false, transformers' after them",
        False,
        boolean,
    ),
    "attn_type": Checked(
        "attn_type",
        ("espnet",),
        "transformers' conformer has ESPnet's attention (linear_q/k/v/out), not fairseq's own",
        "",
        one_of("", "espnet"),
    ),
    "pos_enc_type": Translated("pos_enc_type", POSITIONS, "position_embeddings_type", "abs"),
    "depthwise_conv_kernel_size": Translated(
        "depthwise_conv_kernel_size", integer(1, 4097), "conv_depthwise_kernel_size", 31
    ),
    "max_positions": Translated("max_positions", integer(1, 10**7), "max_source_positions", 100_000),
    **{name: Ignored(name, ADAPTERS) for name in ("adp_num", "adp_dim", "adp_act_fn", "adp_trf_idx")},
}
"""fairseq's ``Wav2Vec2Config`` for conformer layers (``layer_type: conformer``) as transformers'
conformer reads it: the position encoding (relative or rotary; ``abs`` is refused), the depthwise
kernel, and what the target needs (ESPnet attention, the encoder norm after the layers)."""


def _alone(extras: Extras) -> Extras:
    return extras


def _as_exported(exporter: Exporter) -> Exporter:
    return exporter


def described(name: str, source: str, target: ModelClass) -> dict[str, Any]:
    """A shipped family's registry entry and bundled reference layout; a port's own ``name``,
    described from what it converts (no reference layout)."""
    from wmap.registry import SHIPPED

    if any(family.name == name for family in SHIPPED):
        return shipped(name)
    return {"name": name, "source": source, "target": f"transformers {class_name(target)}"}


@attrs.frozen
class Wav2Vec2Style:
    """A fairseq wav2vec 2.0-style family, described once: :meth:`pretrained` and :meth:`ctc` are its
    two :class:`~wmap.models.base.ModelSpec` (named ``name`` and ``name_ctc``), both ways.

    - ``base``: the encoder's attribute in the transformers models (``wav2vec2_conformer``);
    - ``config_class``, ``pretraining``, ``ctc_class``: the transformers classes; ``headless``: the
      class for a pre-trained file without a quantizer (``quantize_targets: false``), else refused;
    - ``fields``: fields of fairseq's ``Wav2Vec2Config`` read otherwise than wav2vec 2.0's (by name);
    - ``layers``: the layer rules (:data:`TRANSFORMER_LAYERS`, :data:`CONFORMER_LAYERS`);
    - ``layer_types``: fairseq's ``layer_type`` values the fine-tuning wrapper may name (it builds the
      encoder with the wrapper's value);
    - ``fixed``: keyword arguments of the target config derived from the encoder's translation;
    - ``made``: what the family makes where the original has nothing (:func:`identity_projection`; with
      :func:`~wmap.fairseq.rules.made_by`, a family's own too);
    - ``agrees``: the family's own check of a file's config against its tensors (which layers hold adapters);
    - ``beside``: what the CTC family writes beside the model, given its processor's writer (or none):
      wav2vec2's adapter file (:func:`~wmap.fairseq.adapters.with_adapter_file`); ``beside_back``: what
      its way back reads of them (the corpus an adapter file names:
      :func:`~wmap.fairseq.adapters.with_adapter_corpus`).
    The way back's configs come from the same tables (their inverse, and the checked single values)."""

    name: str
    base: str
    config_class: type[PretrainedConfig]
    pretraining: ModelClass
    ctc_class: ModelClass
    headless: ModelClass | None = None
    fields: Mapping[str, Field] = attrs.field(factory=dict)
    layers: tuple[Transform, ...] = TRANSFORMER_LAYERS
    layer_types: tuple[str, ...] = ("transformer",)
    fixed: Callable[[Translation], dict[str, Any]] = _nothing
    beside: Callable[[Extras], Extras] = _alone
    beside_back: Callable[[Exporter], Exporter] = _as_exported
    made: Makes = identity_projection
    agrees: Agrees = _agrees

    @property
    def prefix(self) -> str:
        """The transformers classes' prefix (``Wav2Vec2Conformer``), for rule-group names."""
        return self.config_class.__name__.removesuffix("Config")

    def pretrained_fields(self) -> tuple[Field, ...]:
        """fairseq's ``cfg.model`` of a pre-trained file (a headless family translates
        ``quantize_targets`` to choose the class)."""
        headless = {"quantize_targets": Translated("quantize_targets", boolean, None, False)} if self.headless else {}
        return encoder_fields(pretraining=True, **{**self.fields, **headless})

    def encoder_fields(self) -> tuple[Field, ...]:
        """fairseq's ``cfg.model.w2v_args.model`` of a fine-tuned file."""
        return encoder_fields(pretraining=False, **self.fields)

    @property
    def _fixed(self) -> dict[str, Any]:
        """The encoder table's single allowed values: what the way back must spell (a conformer's layer_type)."""
        return fixed_back(self.encoder_fields())

    @property
    def _back(self) -> Merged:
        """What a pre-trained export's model config spells beyond its table: the fixed values, the quantizer."""
        return Merged(self._fixed, Made(self._quantizes))

    @property
    def pretrained_table(self) -> ConfigTable:
        """The table of a pre-trained file's ``cfg.model``."""
        return ConfigTable(f"fairseq cfg.model ({self.name})", self.pretrained_fields())

    @property
    def encoder_table(self) -> ConfigTable:
        """The table of a fine-tuned file's encoder config (``cfg.model.w2v_args.model``)."""
        return ConfigTable(f"fairseq cfg.model.w2v_args.model ({self.name})", self.encoder_fields())

    def _pretrained_kwargs(self, read: Translation) -> dict[str, Any]:
        if self.headless is not None and not read.values["quantize_targets"]:
            return {**self.fixed(read), "architectures": [class_name(self.headless)]}
        return self.fixed(read)

    def _pretrained_rules(self, config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
        if not is_headless(self.headless, config):
            return pretraining_rules(config, self.base, self.prefix, self.layers)
        assert self.headless is not None
        encoder = encoder_rules(config, class_name(self.headless), self.layers)
        return seq(
            with_upgrades(first_match(class_name(self.headless), (*encoder, *PRETRAINING_HEADS))), route_weight_norm()
        )

    def _quantizes(self, config: PretrainedConfig) -> dict[str, bool]:
        return {"quantize_targets": not is_headless(self.headless, config)}

    def pretrained(self) -> ModelSpec:
        """The pre-trained family: ``cfg.model`` -> the ``...ForPreTraining`` (or headless) model."""
        table = self.pretrained_table
        return ModelSpec(
            made=self.made,
            **described(self.name, f"fairseq {self.name} (pre-trained)", self.pretraining),
            stand_ins=STAND_INS,
            config_class=self.config_class,
            config_from_checkpoint=EncoderConfig(
                table, self.config_class, extra=self._pretrained_kwargs, agrees=self.agrees
            ),
            pipeline=self._pretrained_rules,
            model_class=self.pretraining,
            headless=self.headless,
            extras=feature_extractor_writer,
            export=pretraining_exporter("wav2vec2", self.pretrained_fields(), self._back),
        )

    def ctc(self) -> ModelSpec:
        """The fine-tuned family: the CTC wrapper around ``w2v_args.model`` -> the ``...ForCTC`` model."""
        table = self.encoder_table
        wrapper = ctc_fine_tuning(*self.layer_types)
        return ModelSpec(
            made=self.made,
            **described(f"{self.name}_ctc", f"fairseq {self.name} (fine-tuned, CTC)", self.ctc_class),
            stand_ins=STAND_INS,
            config_class=self.config_class,
            config_from_checkpoint=FineTunedConfig(
                EncoderConfig(table, self.config_class, extra=self.fixed, agrees=self.agrees), wrapper
            ),
            pipeline=lambda config, meta: ctc_rules(config, self.base, class_name(self.ctc_class), layers=self.layers),
            model_class=self.ctc_class,
            extras=self.beside(ctc_processor),
            without_processor=self.beside(no_extras),
            export=self.beside_back(ctc_exporter("wav2vec2", fields=self.encoder_fields(), extra=self._fixed)),
            takes_file="--dict: the fine-tuning dictionary (dict.ltr.txt) where task_state lacks it",
        )
