"""Credit assignment to data sources: which source of training data helps or
hurts, predicted by group influence and measured by retraining.

A *source* is where a row came from: a labeling function, an annotator, a
sub-corpus, a collection year. Each source is one group, and its effect is
the usual new minus old for removing its rows.

Weak supervision on e-mail (SpamAssassin): a set of keyword and header rules
(labeling functions), each voting spam, ham or abstaining on a message. The
training set has one row per (message, vote) pair, weighted so that every
message that any function voted on weighs 1 in total::

    rows  = {(i, j) : function j fires on message i},  label = vote_j(i)
    s_ij  = 1 / (number of functions that fired on message i)

    F(theta; s) = sum_ij s_ij * l(vote_j(i), x_i; theta) + l2_reg/2 ||coef||^2

Gold labels are used only to evaluate: a function's precision, and the test
loss. Removing function j's rows (fraction 1 of each row's weight) is the
group of source j. Messages on which no function fires are not in the
training set.

For every source: coverage (the share of training messages it labels),
precision against gold labels (weak supervision) and the predicted and
actual change of the mean test loss, of the mean test loss per class and of
the source's own loss (self-loss).

Notes
-----
Removing a source's rows is not the same as changing how sources are
designed or recruited: a rewritten labeling function, or an annotator hired
instead of another, produces different rows, whose effect this does not
predict. And the effect of removing two sources is not the sum of their
single effects once their rows interact through the refit.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import _validation
from ._model import fit

ABSTAIN = -1
HAM, SPAM = 0, 1


@dataclass(frozen=True)
class Mail:
    """What a labeling function sees of one message.

    ``subject`` and ``body`` are the decoded Subject header and text body;
    ``sender_domain`` and ``mailing_list`` come from the From and List-Id
    (or X-Mailing-List) headers, as `groupinf.datasets.load_spam` derives
    them (``"unknown"`` / ``"none"`` when absent).
    """

    subject: str
    body: str
    sender_domain: str = "unknown"
    mailing_list: str = "none"

    @classmethod
    def from_text(cls, text, sender_domain="unknown", mailing_list="none"):
        """From the ``"subject\\n\\nbody"`` text of `load_spam`."""
        subject, _, body = str(text).partition("\n\n")
        return cls(subject.strip(), body, str(sender_domain), str(mailing_list))


@dataclass(frozen=True)
class LabelingFunction:
    """A rule that votes ``vote`` on the messages where ``fires`` is true."""

    name: str
    vote: int
    description: str
    fires: Callable[[Mail], bool]


def _words(*patterns):
    rx = re.compile(r"\b(?:" + "|".join(patterns) + r")\b", re.IGNORECASE)
    return rx.search


_MONEY = re.compile(r"\$\s?\d")
_FREE = _words("free")
_OFFER = _words("offer", "order", "trial", "gift", "bonus", "prize")
_CLICK = re.compile(r"click\s+here|click\s+below", re.IGNORECASE)
_REMOVE = re.compile(r"to\s+be\s+removed|remove\s+(?:me|you|yourself)|opt[\s-]?out",
                     re.IGNORECASE)
_COMMERCE = _words("mortgage", "refinance", "loans?", "viagra", "casino",
                   "debt", "credit\\s+card", "weight\\s+loss", "investment",
                   "earn", "income")
_TECH = _words("linux", "kernel", "patch(?:es)?", "perl", "python", "rpm",
               "cvs", "gcc", "debian", "compile[ds]?", "bug")
_QUOTED = re.compile(r"^\s*>|\bwrote:", re.MULTILINE)
_FREEMAIL = re.compile(r"(?:^|\.)(?:hotmail|yahoo|aol|msn|excite|mail)\.com$")


def _shouting(subject):
    letters = [c for c in subject if c.isalpha()]
    return len(letters) >= 10 and sum(c.isupper() for c in letters) >= 0.7 * len(
        letters)


# Written from what spam and list mail commonly look like, before looking
# at their precision on this corpus; some are deliberately weak (a real
# labeling-function set has weak members too).
SPAM_LABELING_FUNCTIONS = (
    LabelingFunction("money_amount", SPAM, "a dollar amount ($ then a digit)",
                     lambda m: bool(_MONEY.search(m.subject + "\n" + m.body))),
    LabelingFunction("free_offer", SPAM,
                     "'free' together with offer/order/trial/gift/bonus/prize",
                     lambda m: bool(_FREE(m.subject + " " + m.body)
                                    and _OFFER(m.subject + " " + m.body))),
    LabelingFunction("click_here", SPAM, "'click here' or 'click below'",
                     lambda m: bool(_CLICK.search(m.body))),
    LabelingFunction("remove_me", SPAM, "removal or opt-out instructions",
                     lambda m: bool(_REMOVE.search(m.body))),
    LabelingFunction("commerce_words", SPAM,
                     "mortgage, loans, viagra, casino, debt, income, ...",
                     lambda m: bool(_COMMERCE(m.subject + " " + m.body))),
    LabelingFunction("subject_shouting", SPAM,
                     "subject mostly capitals, or with '!'",
                     lambda m: _shouting(m.subject) or "!" in m.subject),
    LabelingFunction("freemail_sender", SPAM,
                     "sender at hotmail, yahoo, aol, msn, excite or mail.com",
                     lambda m: bool(_FREEMAIL.search(m.sender_domain))),
    LabelingFunction("mailing_list", HAM, "a List-Id or X-Mailing-List header",
                     lambda m: m.mailing_list != "none"),
    LabelingFunction("subject_reply", HAM, "subject starts with 'Re:'",
                     lambda m: m.subject.lower().startswith("re:")),
    LabelingFunction("quoted_reply", HAM, "quoted lines ('>') or 'wrote:'",
                     lambda m: bool(_QUOTED.search(m.body))),
    LabelingFunction("tech_words", HAM,
                     "linux, kernel, patch, perl, python, rpm, cvs, bug, ...",
                     lambda m: bool(_TECH(m.subject + " " + m.body))),
)


def mails_from_dataset(data, split="train"):
    """The :class:`Mail` of every message of a `load_spam` split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    texts = data.texts_train if split == "train" else data.texts_test
    groups = data.groups_train if split == "train" else data.groups_test
    if texts is None:
        raise ValueError(f"dataset {data.name!r} has no message texts; "
                         f"labeling functions need them (use 'spam')")
    n = len(texts)
    sender = groups.get("sender_domain", np.full(n, "unknown"))
    lists = groups.get("mailing_list", np.full(n, "none"))
    return [Mail.from_text(t, s, m) for t, s, m in zip(texts, sender, lists)]


def apply_labeling_functions(lfs, mails):
    """Votes of every function on every message.

    Returns
    -------
    ndarray of int8, shape (n_messages, n_functions)
        The function's vote (a class code) where it fires, ``ABSTAIN`` (-1)
        elsewhere.
    """
    lfs = list(lfs)
    if not lfs:
        raise ValueError("lfs is empty: pass at least one labeling function")
    names = [lf.name for lf in lfs]
    if len(set(names)) != len(names):
        raise ValueError(f"labeling function names must be unique, got {names}")
    votes = np.full((len(mails), len(lfs)), ABSTAIN, dtype=np.int8)
    for j, lf in enumerate(lfs):
        for i, mail in enumerate(mails):
            if lf.fires(mail):
                votes[i, j] = lf.vote
    return votes


@dataclass
class WeakRows:
    """The weakly supervised training set built from the votes.

    Attributes
    ----------
    message : ndarray of int64, shape (n_rows,)
        The message (row of the message matrix) of each training row.
    label : ndarray of int64, shape (n_rows,)
        The vote it carries.
    weight : ndarray of float64, shape (n_rows,)
        Its weight s: 1 / (functions that fired on the message) per vote.
    sources : scipy.sparse.csr_matrix of shape (n_functions, n_rows)
        The group of each function as fractions of each row's weight.
    """

    message: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    sources: sp.csr_matrix


def weak_supervision_rows(votes, merge=True):
    """The training rows of weak supervision and one group per function.

    Every vote is a row (message i, label vote_j(i)) of weight
    1 / (number of functions that fired on message i). The rows of one
    message that carry the same label are identical, so with ``merge=True``
    (the default) they are stored once with their summed weight, and
    function j's group removes its share of that row (1 / the number of
    functions that gave message i that label). The objective, and the
    weight each group removes from each (x, y), are the same either way;
    merging only makes the training set up to several times smaller. With
    ``merge=False`` there is one row per vote and every group entry is 1.

    Parameters
    ----------
    votes : array of shape (n_messages, n_functions)
        From :func:`apply_labeling_functions` (``ABSTAIN`` = -1).
    merge : bool, default True

    Returns
    -------
    WeakRows
        Rows in message order (then label); messages on which no function
        fired have none.
    """
    votes = np.asarray(votes)
    if votes.ndim != 2:
        raise ValueError(f"votes must be 2-D (messages, functions), got shape "
                         f"{votes.shape}")
    n_msg, n_lf = votes.shape
    msg, src = np.nonzero(votes != ABSTAIN)
    label = votes[msg, src].astype(np.int64)
    fired = np.bincount(msg, minlength=n_msg)
    if not merge:
        m = msg.size
        C = sp.csr_matrix((np.ones(m), (src, np.arange(m))), shape=(n_lf, m))
        return WeakRows(msg.astype(np.int64), label, 1.0 / fired[msg], C)

    # One row per distinct (message, label); the votes it merges.
    keys = msg.astype(np.int64) * (int(label.max(initial=0)) + 1) + label
    uniq, row_of_vote, same = np.unique(keys, return_inverse=True,
                                        return_counts=True)
    first = np.zeros(uniq.size, dtype=np.int64)
    first[row_of_vote[::-1]] = np.arange(msg.size)[::-1]
    rows_msg, rows_label = msg[first].astype(np.int64), label[first]
    weight = same / fired[rows_msg]
    C = sp.csr_matrix((1.0 / same[row_of_vote], (src, row_of_vote)),
                      shape=(n_lf, uniq.size))
    return WeakRows(rows_msg, rows_label, weight, C)


def coverage_precision(votes, gold):
    """Per function: share of messages it votes on, and the share of those
    votes that agree with the gold label (NaN if it never fires).

    Returns (coverage, precision, n_fired), each of shape (n_functions,).
    """
    votes = np.asarray(votes)
    gold = np.asarray(gold)
    if gold.shape != (votes.shape[0],):
        raise ValueError(f"gold has shape {gold.shape}, expected "
                         f"({votes.shape[0]},)")
    fired = votes != ABSTAIN
    n_fired = fired.sum(axis=0)
    correct = (fired & (votes == gold[:, None])).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_fired > 0, correct / np.maximum(n_fired, 1), np.nan)
    return n_fired / votes.shape[0], precision, n_fired


# ---------------------------------------------------------------------------
# Sources given by a column
# ---------------------------------------------------------------------------


def column_sources(values, *, min_size=1, max_sources=None):
    """One group per value of a column (index arrays), largest first.

    Values with fewer than ``min_size`` rows are left out; with
    ``max_sources`` only that many of the largest values are kept. Returns
    (groups, names, n_left_out).
    """
    values = np.asarray(values).astype(str)
    uniq, counts = np.unique(values, return_counts=True)
    order = np.lexsort((uniq, -counts))
    keep = [k for k in order if counts[k] >= min_size]
    if max_sources is not None:
        keep = keep[:max_sources]
    groups = [np.flatnonzero(values == uniq[k]) for k in keep]
    return groups, [str(uniq[k]) for k in keep], len(uniq) - len(keep)


# ---------------------------------------------------------------------------
# Effects per source
# ---------------------------------------------------------------------------


def effect_quantities(effects, y_test_codes, class_names):
    """Named (G,) effect vectors of a GroupEffects for the credit table.

    ``test_loss`` is the change of the mean test loss; ``test_loss[name]``
    the change of the mean over the test points of class ``class_names[k]``
    (class code k); ``self_loss`` the change of the source's own (weighted)
    training loss.
    """
    out = {"test_loss": effects.test_loss.mean(axis=1)}
    for k, name in enumerate(class_names):
        sel = np.asarray(y_test_codes) == k
        if sel.any():
            out[f"test_loss[{name}]"] = effects.test_loss[:, sel].mean(axis=1)
    out["self_loss"] = effects.self_loss
    return out


def cross_validate_l2_grouped(X, y, sample_weight, unit, grid=(1e-4, 1e-3, 1e-2,
                                                               1e-1),
                              *, n_folds=3, seed=0):
    """Choose l2_reg by K-fold weighted held-out log-loss, folds by ``unit``.

    Rows that share a unit (the votes on one message) fall in the same fold,
    so a message is never scored by a model that saw it. The grid is on
    l2_reg / (total weight). Returns (l2_reg, scores) like
    `groupinf.model_selection.cross_validate_l2`.
    """
    X = _validation.check_X(X)
    y = np.asarray(y)
    w = np.asarray(sample_weight, dtype=np.float64)
    unit = np.asarray(unit)
    units = np.unique(unit)
    perm = np.random.default_rng(seed).permutation(units.size)
    fold_of_unit = np.empty(units.size, dtype=np.int64)
    fold_of_unit[perm] = np.arange(units.size) % n_folds
    fold = fold_of_unit[np.searchsorted(units, unit)]
    total = float(w.sum())
    scores = []
    warm = [None] * n_folds
    for c in sorted(grid, reverse=True):
        losses = []
        for k in range(n_folds):
            tr, te = fold != k, fold == k
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = fit(X[tr], y[tr], c * total * tr.mean(), w[tr], tol=1e-9,
                        init=warm[k])
            warm[k] = m
            losses.append(float(np.sum(w[te] * m.loss(X[te], y[te]))
                                / np.sum(w[te])))
        scores.append((c, float(np.mean(losses))))
    scores.sort()
    best = min(scores, key=lambda t: t[1])[0]
    return best * total, {"grid": [c for c, _ in scores],
                          "mean_weighted_logloss": [v for _, v in scores],
                          "best": best, "folds_by": "message"}
