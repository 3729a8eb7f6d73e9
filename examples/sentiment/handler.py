"""Sentiment of English text with VADER, a lexicon-and-rules model that ships in its package.

Input ``{"text": "..."}`` gives the polarity scores of that text; ``{"texts": [...]}`` gives
``{"results": [scores, ...]}`` in the same order. Scores: ``neg``, ``neu``, ``pos`` (shares that
add up to 1), ``compound`` (-1 to 1) and ``label`` (``positive`` when compound >= 0.05,
``negative`` when <= -0.05, else ``neutral``, VADER's usual thresholds).
"""

import sys
from pathlib import Path

try:
    import sluice_handler
except ImportError:  # run from the repository without `pip install ./python`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    import sluice_handler

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# Loaded once per process, before run() says "ready".
analyzer = SentimentIntensityAnalyzer()


def score(text):
    scores = analyzer.polarity_scores(text)
    compound = scores["compound"]
    label = "positive" if compound >= 0.05 else "negative" if compound <= -0.05 else "neutral"
    return {**scores, "label": label}


def check_text(value, name):
    if not isinstance(value, str):
        raise sluice_handler.PermanentError(f"{name} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise sluice_handler.PermanentError(f"{name} is empty")
    return value


def handle(input, ctx):
    if not isinstance(input, dict):
        raise sluice_handler.PermanentError('the input must be {"text": "..."} or {"texts": [...]}')
    if "texts" in input:
        texts = input["texts"]
        if not isinstance(texts, list) or not texts:
            raise sluice_handler.PermanentError("texts must be a non-empty list of strings")
        texts = [check_text(t, f"texts[{i}]") for i, t in enumerate(texts)]
        step = max(1, len(texts) // 20)  # about 20 progress reports, whatever the length
        results = []
        for i, text in enumerate(texts):
            if ctx.cancelled:
                raise sluice_handler.RetryableError("cancelled")
            results.append(score(text))
            if (i + 1) % step == 0 or i + 1 == len(texts):
                ctx.progress((i + 1) / len(texts), f"{i + 1} of {len(texts)} texts")
        return {"results": results}
    if "text" not in input:
        raise sluice_handler.PermanentError('the input has no "text" (or "texts")')
    return score(check_text(input["text"], "text"))


if __name__ == "__main__":
    sluice_handler.run(handle)
