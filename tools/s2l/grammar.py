"""Spoken-maths and plain-sentence grammar for the voxtok S2L training corpus.

Each generator returns (spoken text, kind, template name). The LaTeX target is
made from the spoken text by voxtok's rules converter (`voxtok latex`), so the
targets follow one canonical style; sentences without maths keep their text.

Held-out split: `HELDOUT_NUMBERS` never appear in training items and the
templates in `HELDOUT_TEMPLATES` are only generated for the test split (they
combine constructs the training templates teach separately).
"""

import random

# ---------------------------------------------------------------- English

EN_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
            "seventeen", "eighteen", "nineteen"]
EN_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy",
           80: "eighty", 90: "ninety"}

# Numbers only the test split uses (their words are all seen in training).
HELDOUT_NUMBERS = {13, 27, 38, 46, 64, 75, 89, 350}


def en_number(n):
    if n < 20:
        return EN_UNITS[n]
    if n < 100:
        t, u = divmod(n, 10)
        return EN_TENS[t * 10] + ("" if u == 0 else " " + EN_UNITS[u])
    if n < 1000:
        h, r = divmod(n, 100)
        return EN_UNITS[h] + " hundred" + ("" if r == 0 else " " + en_number(r))
    th, r = divmod(n, 1000)
    return en_number(th) + " thousand" + ("" if r == 0 else " " + en_number(r))


def pick_number(rng, test, small=False):
    while True:
        if small:
            n = rng.randint(0, 12)
        else:
            r = rng.random()
            n = rng.randint(0, 20) if r < 0.6 else rng.randint(21, 99) if r < 0.9 else rng.choice(
                [100, 120, 150, 200, 250, 300, 350, 500, 1000, 2024, 360, 180])
        if test and n in HELDOUT_NUMBERS and rng.random() < 0.5:
            return n
        if n not in HELDOUT_NUMBERS:
            return n


EN_VARS = ["x", "y", "z", "a", "b", "c", "n", "k", "t", "m", "r", "p", "q", "u", "v"]
EN_CAPS = ["capital a", "capital b", "capital f", "capital x", "capital n"]
EN_GREEK = ["alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "pi", "sigma", "omega",
            "phi", "epsilon", "tau", "rho"]
EN_FUNCS = ["sine", "cosine", "tangent", "log", "the natural log of", "exp of"]


class En:
    def __init__(self, rng, test):
        self.r, self.test = rng, test

    def num(self, small=False):
        r = self.r
        if not small and r.random() < 0.08:
            return "%s point %s" % (en_number(r.randint(0, 9)), en_number(r.randint(1, 9)))
        return en_number(pick_number(r, self.test, small))

    def var(self):
        r = self.r.random()
        if r < 0.7:
            return self.r.choice(EN_VARS)
        if r < 0.9:
            return self.r.choice(EN_GREEK)
        return self.r.choice(EN_CAPS)

    def atom(self):
        return self.num(small=True) if self.r.random() < 0.35 else self.var()

    def term(self, depth=0):
        r, c = self.r, self.r.random()
        v = self.var()
        if c < 0.18:
            return v
        if c < 0.30:
            return "%s %s" % (self.num(small=True), r.choice(EN_VARS))
        if c < 0.42:
            return "%s %s" % (v, r.choice(["squared", "cubed"]))
        if c < 0.50:
            return "%s to the power of %s" % (v, r.choice([self.num(small=True), r.choice(EN_VARS)]))
        if c < 0.57:
            return "%s to the %s" % (v, r.choice(["fourth", "fifth", "n-th", "k-th"]))
        if c < 0.64:
            return "the square root of %s" % self.atom()
        if c < 0.70:
            return "%s over %s" % (self.atom(), self.atom())
        if c < 0.76:
            f = r.choice(EN_FUNCS)
            return "%s %s" % (f, v) if f.endswith("of") else "%s of %s" % (f, v) if r.random() < 0.5 else "%s %s" % (f, v)
        if c < 0.82:
            return "%s sub %s" % (r.choice(EN_VARS), r.choice(["i", "j", "n", "k", "zero", "one", "two"]))
        if c < 0.86:
            return "%s of %s" % (r.choice(["f", "g", "h"]), r.choice(EN_VARS))
        if c < 0.90:
            return "the absolute value of %s" % v
        if c < 0.93:
            return "%s factorial" % r.choice(["n", "k", "five", "three"])
        return self.num()

    def expr(self, n_max=3):
        parts = [self.term()]
        for _ in range(self.r.randint(0, n_max)):
            parts.append(self.r.choice(["plus", "minus", "plus", "minus", "times"]))
            parts.append(self.term())
        return " ".join(parts)

    REL = ["equals", "equals", "is equal to", "is not equal to", "is less than", "is greater than",
           "is less than or equal to", "is greater than or equal to", "is approximately equal to"]

    def equation(self):
        return "%s %s %s" % (self.expr(2), self.r.choice(self.REL), self.expr(1))

    def integral(self):
        v = self.r.choice(["x", "t", "u"])
        lo, hi = self.r.choice([("zero", "one"), ("zero", "infinity"), ("a", "b"), ("zero", "pi"),
                                ("minus one", "one"), ("one", "two"), ("zero", "two pi")])
        body = self.r.choice(["%s squared" % v, "%s cubed" % v, "sine %s" % v, "cosine of %s" % v,
                              "e to the power of minus %s" % v, "f of %s" % v, "one over %s" % v,
                              "%s" % v, "two %s plus one" % v])
        if self.r.random() < 0.3:
            return "the integral of %s d %s" % (body, v)
        return "the integral from %s to %s of %s d %s" % (lo, hi, body, v)

    def sum_(self):
        i = self.r.choice(["i", "k", "n"])
        op = self.r.choice(["sum", "sum", "product"])
        lo = self.r.choice(["zero", "one"])
        hi = self.r.choice(["n", "infinity", "ten", "capital n"])
        body = self.r.choice([i, "%s squared" % i, "a sub %s" % i, "x sub %s" % i, "one over %s squared" % i,
                              "x to the %s" % i, "one over %s" % i])
        return "the %s from %s equals %s to %s of %s" % (op, i, lo, hi, body)

    def limit(self):
        v = self.r.choice(["x", "n", "h"])
        to = self.r.choice(["zero", "infinity", "a", "one"])
        verb = self.r.choice(["tends to", "approaches", "goes to"])
        body = self.r.choice(["sine %s over %s" % (v, v), "one over %s" % v, "f of %s" % v,
                              "%s squared" % v, "e to the %s" % v])
        return "the limit as %s %s %s of %s" % (v, verb, to, body)

    def deriv(self):
        y, x = self.r.choice([("y", "x"), ("f", "t"), ("y", "t"), ("u", "x")])
        c = self.r.random()
        if c < 0.4:
            return "d %s by d %s" % (y, x) + ("" if self.r.random() < 0.5 else " equals %s" % self.expr(1))
        if c < 0.6:
            return "d by d %s of %s" % (x, self.term())
        if c < 0.8:
            return "partial %s by partial %s" % (y, x)
        return "d squared %s by d %s squared" % (y, x)

    def brackets(self):
        c = self.r.random()
        if c < 0.4:
            return "open bracket %s close bracket %s" % (self.expr(1), self.r.choice(["squared", "cubed", "times two", ""]))
        if c < 0.7:
            return "%s open bracket %s close bracket" % (self.atom(), self.expr(1))
        return "one over the quantity %s" % self.expr(1)

    def sets(self):
        return self.r.choice([
            "%s is an element of capital %s" % (self.r.choice(EN_VARS), self.r.choice("abs")),
            "capital a union capital b", "capital a intersection capital b",
            "capital a is a subset of capital b", "for all x in capital a", "there exists x",
            "%s maps to %s" % (self.r.choice(EN_VARS), self.term()), "a implies b",
            "p if and only if q", "%s tends to infinity" % self.r.choice(EN_VARS),
            "open brace %s comma %s comma %s close brace" % (self.num(True), self.num(True), self.num(True)),
        ])

    def inline(self):
        return self.r.choice([
            "the area is %s" % self.term(), "we have %s" % self.equation(),
            "so the answer is %s equals %s" % (self.r.choice(EN_VARS), self.num()),
            "where %s is greater than zero" % self.r.choice(EN_VARS),
            "the derivative is d y by d x", "let %s be the unknown" % self.r.choice(EN_VARS),
            "then %s is bounded by one" % self.term(),
        ])

    SUBJ = ["the meeting", "my brother", "the weather", "this lecture", "our teacher", "the train",
            "the library", "a student", "the report", "my phone", "the garden", "the coffee"]
    PRED = ["starts at nine in the morning", "is very cold today", "was cancelled yesterday",
            "will be ready next week", "is closed on sunday", "arrived late again", "looks beautiful",
            "needs more time", "is on the second floor", "was much better than expected",
            "is too expensive", "takes about an hour"]
    OPEN = ["please", "tomorrow", "i think", "today", "after lunch", "in the evening"]

    def sentence(self):
        s = "%s %s" % (self.r.choice(self.SUBJ), self.r.choice(self.PRED))
        if self.r.random() < 0.3:
            s = "%s %s" % (self.r.choice(self.OPEN), s)
        return s

    # training-only compositions: constructs inside larger expressions. They are
    # siblings of the held-out templates, never the same pattern: no square root
    # as a fraction's numerator, no sum after a leading term, and "the square
    # root of the quantity" only over sums and differences.
    def numerator(self):
        r, v = self.r, self.var()
        return r.choice([
            "%s %s" % (v, r.choice(["squared", "cubed"])), "sine %s" % v, "cosine %s" % v,
            "the natural log of %s" % v, "%s of %s" % (r.choice(["f", "g"]), r.choice(EN_VARS)),
            "the absolute value of %s" % v, "%s sub %s" % (r.choice(EN_VARS), r.choice(["i", "k", "n"])),
            "%s to the power of %s" % (v, r.choice(EN_VARS)), "%s %s" % (self.num(small=True), r.choice(EN_VARS)),
        ])

    def c_frac(self):
        return "%s over %s" % (self.numerator(), self.atom())

    def c_quantity(self):
        r = self.r
        if r.random() < 0.5:
            f = r.choice(["sine", "cosine", "the natural log", "the absolute value", "the square"])
            return "%s of the quantity %s over %s" % (f, self.atom(), self.atom())
        return "the square root of the quantity %s %s %s" % (self.atom(), r.choice(["plus", "minus"]), self.atom())

    def c_term_construct(self):
        c = self.r.choice([self.integral, self.limit, self.product])
        return "%s %s %s" % (self.term(), self.r.choice(["plus", "minus"]), c())

    def c_construct_term(self):
        c = self.r.choice([self.sum_, self.integral, self.limit])
        return "%s %s %s" % (c(), self.r.choice(["plus", "minus"]), self.term())

    def product(self):
        i = self.r.choice(["i", "k", "n"])
        return "the product from %s equals %s to %s of %s" % (
            i, self.r.choice(["zero", "one"]), self.r.choice(["n", "ten", "capital n"]),
            self.r.choice([i, "a sub %s" % i, "%s squared" % i, "one plus %s" % i]))

    # held-out compositions (test only)
    def h_root_frac(self):
        return "the square root of the quantity %s over %s" % (self.atom(), self.atom())

    def h_int_sum(self):
        return "%s plus the sum from i equals one to n of i squared" % self.term()

    def h_deriv_eq(self):
        return "d y by d x equals %s times %s" % (self.term(), self.term())


# ---------------------------------------------------------------- Russian

RU_UNITS = ["ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять",
            "десять", "одиннадцать", "двенадцать", "тринадцать", "четырнадцать", "пятнадцать",
            "шестнадцать", "семнадцать", "восемнадцать", "девятнадцать"]
RU_TENS = {20: "двадцать", 30: "тридцать", 40: "сорок", 50: "пятьдесят", 60: "шестьдесят",
           70: "семьдесят", 80: "восемьдесят", 90: "девяносто"}
RU_HUND = {100: "сто", 200: "двести", 300: "триста", 500: "пятьсот"}


def ru_number(n):
    if n < 20:
        return RU_UNITS[n]
    if n < 100:
        t, u = divmod(n, 10)
        return RU_TENS[t * 10] + ("" if u == 0 else " " + RU_UNITS[u])
    if n < 1000 and (n // 100) * 100 in RU_HUND:
        h, r = divmod(n, 100)
        return RU_HUND[h * 100] + ("" if r == 0 else " " + ru_number(r))
    if n == 1000:
        return "тысяча"
    return None


RU_VARS = ["икс", "игрек", "зет", "а", "бэ", "цэ", "эн", "ка", "тэ", "эм", "эр"]
RU_GREEK = ["альфа", "бета", "гамма", "дельта", "тета", "лямбда", "мю", "пи", "сигма", "омега", "фи", "эпсилон"]
RU_CAPS = ["большое а", "большое бэ", "большая гамма", "большая дельта"]


class Ru:
    def __init__(self, rng, test):
        self.r, self.test = rng, test

    def num(self, small=False):
        while True:
            w = ru_number(pick_number(self.r, self.test, small))
            if w:
                return w

    def var(self):
        c = self.r.random()
        if c < 0.75:
            return self.r.choice(RU_VARS)
        if c < 0.93:
            return self.r.choice(RU_GREEK)
        return self.r.choice(RU_CAPS)

    def atom(self):
        return self.num(small=True) if self.r.random() < 0.35 else self.var()

    def term(self):
        r, c = self.r, self.r.random()
        v = self.var()
        if c < 0.2:
            return v
        if c < 0.32:
            return "%s %s" % (self.num(small=True), r.choice(RU_VARS))
        if c < 0.46:
            return "%s %s" % (v, r.choice(["в квадрате", "в кубе"]))
        if c < 0.54:
            return "%s в степени %s" % (v, r.choice(["эн", "ка", "два", "три", "минус один"]))
        if c < 0.62:
            return "корень из %s" % self.atom()
        if c < 0.68:
            return "%s делить на %s" % (self.atom(), self.atom())
        if c < 0.76:
            return "%s %s" % (r.choice(["синус", "косинус", "тангенс", "логарифм", "натуральный логарифм"]), v)
        if c < 0.82:
            return "%s с индексом %s" % (r.choice(["икс", "а"]), r.choice(["ай", "эн", "ка"]))
        if c < 0.88:
            return "эф от %s" % r.choice(["икс", "тэ"])
        if c < 0.92:
            return "модуль %s" % v
        if c < 0.95:
            return "%s факториал" % r.choice(["эн", "ка", "пять"])
        return self.num()

    def expr(self, n_max=3):
        parts = [self.term()]
        for _ in range(self.r.randint(0, n_max)):
            parts.append(self.r.choice(["плюс", "минус", "плюс", "минус", "умножить на"]))
            parts.append(self.term())
        return " ".join(parts)

    REL = ["равно", "равно", "не равно", "меньше", "больше", "меньше или равно", "больше или равно"]

    def equation(self):
        return "%s %s %s" % (self.expr(2), self.r.choice(self.REL), self.expr(1))

    def integral(self):
        lo, hi = self.r.choice([("а", "бэ"), ("нуля", "единицы"), ("нуля", "бесконечности"), ("нуля", "пи")])
        body = self.r.choice(["икс в квадрате", "синус икс", "эф от икс", "е в степени минус икс", "икс"])
        if self.r.random() < 0.3:
            return "интеграл %s дэ икс" % body
        return "интеграл от %s до %s %s дэ икс" % (lo, hi, body)

    def sum_(self):
        return self.r.choice([
            "сумма от ка равно нулю до бесконечности икс в степени ка",
            "сумма от эн равно одному до бесконечности один делить на эн в квадрате",
            "произведение от ка равно одному до эн ка",
            "сумма от ка равно одному до эн а с индексом ка",
        ])

    def limit(self):
        v, to = self.r.choice([("икс", "нулю"), ("эн", "бесконечности"), ("икс", "бесконечности")])
        body = self.r.choice(["один делить на %s" % v, "синус %s делить на %s" % (v, v), "эф от икс"])
        return "предел при %s стремящемся к %s %s" % (v, to, body)

    def deriv(self):
        return self.r.choice(["дэ игрек по дэ икс", "дэ эф по дэ тэ"]) + (
            "" if self.r.random() < 0.5 else " равно %s" % self.expr(1))

    def brackets(self):
        if self.r.random() < 0.5:
            return "открыть скобку %s закрыть скобку %s" % (self.expr(1), self.r.choice(["в квадрате", "в кубе", ""]))
        return "%s в скобках %s" % (self.atom(), self.expr(1))

    def sets(self):
        return self.r.choice([
            "%s принадлежит а" % self.r.choice(["икс", "игрек"]), "большое а объединение большое бэ",
            "большое а пересечение большое бэ", "для любого икс", "существует икс",
            "%s стремится к бесконечности" % self.r.choice(["икс", "эн"]), "а следует бэ",
        ])

    def inline(self):
        return self.r.choice(["площадь круга равна пи эр в квадрате", "где эн больше нуля",
                              "тогда икс равно %s" % self.num(True)])

    SUBJ = ["встреча", "мой брат", "погода", "новая лекция", "наш учитель", "поезд", "библиотека",
            "студент", "отчёт", "мой телефон"]
    PRED = ["начинается в девять утра", "сегодня очень холодная", "была отменена вчера",
            "будет готова на следующей неделе", "закрыта в воскресенье", "опять опоздал",
            "выглядит красиво", "требует больше времени", "находится на втором этаже"]

    def sentence(self):
        return "%s %s" % (self.r.choice(self.SUBJ), self.r.choice(self.PRED))

    # training-only compositions (see En): no root as a numerator, no sum after a term.
    def numerator(self):
        r, v = self.r, self.var()
        return r.choice([
            "%s %s" % (v, r.choice(["в квадрате", "в кубе"])), "синус %s" % v, "косинус %s" % v,
            "логарифм %s" % v, "эф от %s" % r.choice(["икс", "тэ"]), "модуль %s" % v,
            "%s с индексом %s" % (r.choice(["икс", "а"]), r.choice(["ай", "эн", "ка"])),
            "%s в степени %s" % (v, r.choice(["эн", "ка", "два"])), "%s %s" % (self.num(small=True), r.choice(RU_VARS)),
        ])

    def c_frac(self):
        return "%s делить на %s" % (self.numerator(), self.atom())

    def c_term_construct(self):
        c = self.r.choice([self.integral, self.limit, self.product])
        return "%s %s %s" % (self.term(), self.r.choice(["плюс", "минус"]), c())

    def c_construct_term(self):
        c = self.r.choice([self.sum_, self.integral, self.limit])
        return "%s %s %s" % (c(), self.r.choice(["плюс", "минус"]), self.term())

    def product(self):
        return "произведение от ка равно %s до эн %s" % (
            self.r.choice(["нулю", "одному"]), self.r.choice(["ка", "а с индексом ка", "ка в квадрате"]))

    def h_root_frac(self):
        return "корень из %s делить на %s" % (self.atom(), self.atom())

    def h_int_sum(self):
        return "%s плюс сумма от ка равно одному до эн а с индексом ка" % self.term()

    def h_deriv_eq(self):
        return "дэ игрек по дэ икс равно %s умножить на %s" % (self.term(), self.term())


TEMPLATES = [("expr", 3), ("equation", 4), ("integral", 1), ("sum_", 1), ("limit", 1), ("deriv", 1),
             ("brackets", 1), ("sets", 1), ("inline", 1), ("sentence", 2)]
HELDOUT_TEMPLATES = ["h_root_frac", "h_int_sum", "h_deriv_eq"]
# Training-only compositions (`make_corpus.py --compositions N`); Ru has no c_quantity.
COMPOSITIONS = {"en": ["c_frac", "c_quantity", "c_term_construct", "c_construct_term"],
                "ru": ["c_frac", "c_term_construct", "c_construct_term"]}


def generate(lang, rng, test, only=None):
    """One (spoken, kind, template) item; test items use held-out templates 40% of the time.
    `only`: pick from these training templates instead ("compositions": COMPOSITIONS[lang])."""
    g = (En if lang == "en" else Ru)(rng, test)
    if only:
        assert not test and not set(only) & set(HELDOUT_TEMPLATES), "supplements are for training only"
        name = rng.choice(COMPOSITIONS[lang] if only == "compositions" else only)
    elif test and rng.random() < 0.4:
        name = rng.choice(HELDOUT_TEMPLATES)
    else:
        names = [n for n, w in TEMPLATES for _ in range(w)]
        name = rng.choice(names)
    text = getattr(g, name)()
    text = " ".join(text.split())
    kind = "sentence" if name in ("sentence", "inline") else "equation"
    return text, kind, name


def uses_heldout_number(text, lang):
    words = " " + text + " "
    for n in HELDOUT_NUMBERS:
        w = en_number(n) if lang == "en" else ru_number(n)
        if w and (" %s " % w) in words:
            return True
    return False


if __name__ == "__main__":
    rng = random.Random(0)
    for lang in ("en", "ru"):
        for _ in range(15):
            print(lang, generate(lang, rng, False))
