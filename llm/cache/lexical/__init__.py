"""Text normalisation for cache keys, and the lexical check a semantic match must pass.

Sentence embeddings are known to be nearly blind to exactly what makes two questions want
different answers: "What is the capital of France?" and "... of Germany?", "enable" and
"disable", "3.12" and "3.13", "support" and "do not support", "from A to B" and "from B to A"
all score 0.66-0.998 with all-MiniLM-L6-v2, above many true paraphrases (see
docs/caching.md). So a semantic hit needs the embedding *and* this check. Both questions are
first rewritten the same way (symbols, units, abbreviations and set phrases: llm/cache/lexicon.py),
their words reduced to lemmas (simplemma's English dictionary, shipped in its wheel) and a small
table of synonyms; acronyms and compounds are paired with their spelled-out words
(llm/cache/spelling.py). Then they must have the same numbers, negations, quoted or code spans and
direction, and no content word of one may stand where the other has a different one (an entity,
an attribute, an opposite operation). Words that only frame a question ("which city is",
"what is the process") are free; a content word that only one side adds is allowed only to a
closer embedding (`match`).

rewrite.py writes both questions one way, profile.py reduces each to what is compared, order.py,
quantities.py and words.py are the rule families, and verdict.py asks them in turn.
"""
