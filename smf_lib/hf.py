"""SMF inside a stock ``transformers.Trainer``: :class:`SmfCallback`.

::

    smf = smf_lib.SparseMemory(model, smf_lib.SmfSettings(selector="kl", top_t=128), background=stats)
    trainer = transformers.Trainer(model=model, args=TrainingArguments(..., learning_rate=1e-2),
                                   train_dataset=ds, data_collator=collate, callbacks=[smf_lib.hf.SmfCallback(smf)])
    trainer.train()

The Trainer runs forward and backward as usual; the :class:`~smf_lib.selection.SparseMemory` takes the value tables'
gradients as backward makes them, so the Trainer's optimizer, gradient clipping and ``zero_grad`` never see them.
After each micro-batch the callback records its reads (the ``attention_mask`` the model was called with), and just
before the Trainer's optimizer step it selects the rows and moves them at the Trainer's current rate (its schedule
included) times ``lr_scale``. The selected rows are clipped on their own norm to ``max_grad_norm`` (the Trainer clips
the other trainable parameters on theirs; with values alone, as SMF trains, the two are the same).
"""

from __future__ import annotations

from transformers import TrainerCallback

from .selection import SparseMemory


class SmfCallback(TrainerCallback):
    """Runs a :class:`~smf_lib.selection.SparseMemory` inside ``transformers.Trainer``.

    Args:
        smf: the step-level object, built on the model the Trainer trains.
        lr_scale: SMF's rate as a multiple of the Trainer's (1: the Trainer's ``learning_rate`` and schedule).
    """

    def __init__(self, smf: SparseMemory, lr_scale: float = 1.0):
        self.smf, self.lr_scale = smf, lr_scale
        self._mask, self._hook = None, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def keep_mask(module, a, kw):  # the mask of the batch the model is called on, for the read counts
            self._mask = kw.get("attention_mask")

        self._hook = (model or self.smf.model).register_forward_pre_hook(keep_mask, with_kwargs=True)

    def on_substep_end(self, args, state, control, **kwargs):
        self.smf.record(self._mask)

    def on_pre_optimizer_step(self, args, state, control, lr_scheduler=None, **kwargs):
        self.smf.record(self._mask)
        self.smf.select()
        if args.max_grad_norm and args.max_grad_norm > 0:
            self.smf.clip_(args.max_grad_norm)
        lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else args.learning_rate
        self.smf.step(lr * self.lr_scale)

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
