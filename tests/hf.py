"""A pretrained SigLIP for the tests, as a model hub would hold one: `save_pretrained` weights and a fast
tokenizer of its own (tiny, trained from a few captions, saved with `save_pretrained`; nothing downloaded)."""

CAPTIONS = ["a small red shirt on the left", "a large blue dress at the top, on a striped background"] * 20


def make_pretrained_siglip(folder, context_length: int = 24) -> None:
    import torch
    from transformers import PreTrainedTokenizerFast

    from jestflow.config import load_config
    from jestflow.model.factory import build_model
    from jestflow.model.hf_siglip import quiet_transformers
    from jestflow.model.tokenizer import HFTokenizer

    tok = HFTokenizer.build(CAPTIONS, context_length)
    c = load_config("smoke", overrides=["model.arch=hf-siglip", f"model.context_length={context_length}"]).model
    torch.manual_seed(1)
    with quiet_transformers():
        build_model(c, tok).hf.save_pretrained(str(folder))
    tok.tok.no_padding()
    tok.tok.no_truncation()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok.tok, pad_token="<pad>", eos_token="<eos>")
    fast.save_pretrained(str(folder))
