"""The retrieval benchmark's documents and questions, generated (deterministic, seed 17).

Twelve fictional organisations each have a handbook of four pages; every handbook states the
same eight kinds of fact with its own values (leave days, head office, founding, support
hours, …), between filler paragraphs that use the same vocabulary. Each question asks for one
fact of one organisation in other words than the handbook's, so the retriever must find the
right kind of fact *and* the right organisation among eleven look-alikes. The answer passage
is the chunk that holds the fact's sentence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ORGANISATIONS = [
    "Halvorsen Maritime", "Quillfeather Press", "Brightwater Analytics", "Okonkwo Logistics",
    "Marchetti Textiles", "Ylvisaker Robotics", "Duarte Health", "Kowalczyk Foods",
    "Sørensen Energy", "Tanaka Instruments", "Abernathy Legal", "Valdés Aviation",
]  # fmt: skip
CITIES = ["Bergen", "Leeds", "Lyon", "Lagos", "Turin", "Tromsø", "Porto", "Gdynia",
          "Aarhus", "Nagoya", "Boston", "Seville"]  # fmt: skip
PEOPLE = ["Ingrid Halvorsen", "Amos Quill", "Lena Bright", "Chidi Okonkwo", "Paola Marchetti",
          "Erik Ylvisaker", "Rita Duarte", "Jan Kowalczyk", "Mette Sørensen", "Kenji Tanaka",
          "Ruth Abernathy", "Luis Valdés"]  # fmt: skip
TOOLS = ["Ledgerly", "SpendBox", "Expensio", "ClaimIt", "PayTrail", "Receipto"]

# (kind, statement, question): the question avoids the statement's key words where it can.
# One fact a line, long as they are, so they read as a table.
# ruff: noqa: E501
FACTS = [
    ("leave", "Staff at {org} receive {n} days of paid annual leave, in addition to public holidays.",
     "How many vacation days does an employee of {org} get each year?"),
    ("office", "The head office of {org} is in {city}, a short walk from the central railway station.",
     "Which city is {org} headquartered in?"),
    ("founded", "{org} was established in {year} by {person}, who still chairs the board.",
     "Who started {org}, and when?"),
    ("support", "The customer helpline of {org} is staffed from {h1}:00 to {h2}:00, Monday to Friday.",
     "When can customers of {org} reach someone by phone?"),
    ("expenses", "Travel costs at {org} must be claimed within {d} days through the {tool} portal.",
     "What is the deadline for submitting an expense claim at {org}?"),
    ("security", "Laptops issued by {org} lock themselves after {m} minutes without input.",
     "How long can a {org} computer sit idle before its screen locks?"),
    ("parking", "Employees of {org} may use car park {g}; a monthly permit costs {p} euros.",
     "Where can {org} staff leave their cars, and what does it cost?"),
    ("remote", "After probation, people at {org} may work from home up to {r} days a week.",
     "How many days per week is remote work allowed at {org}?"),
]  # fmt: skip
FILLER = [
    "Every team holds a short planning meeting on Monday mornings to agree the week's priorities.",
    "New employees are paired with a mentor for their first three months in the company.",
    "The intranet lists the phone numbers of every department and the people on call.",
    "Meeting rooms can be booked through the shared calendar up to four weeks in advance.",
    "Staff are encouraged to take regular breaks and to leave their desks at lunchtime.",
    "Questions about payroll go to the finance office, which replies within two working days.",
    "The company newsletter appears at the start of each month with news from every site.",
    "Visitors sign in at reception and wear a badge for the length of their visit.",
    "Fire drills take place twice a year; the assembly point is marked on every floor plan.",
    "Training budgets are agreed with each manager at the yearly review in the spring.",
    "Office supplies are ordered on Thursdays; requests reach the office manager by Wednesday.",
    "The canteen serves a vegetarian dish every day and a fish dish on Fridays.",
    "Confidential papers are shredded, never put into ordinary recycling bins.",
    "Days of volunteering for local charities count as working time, up to two a year.",
    "Printers on each floor need a badge to release a print job, which saves paper.",
    "Team outings are organised in the summer and paid for by the social committee.",
]


@dataclass(frozen=True)
class Question:
    organisation: str
    kind: str
    text: str
    answer: str  # the fact's sentence, as it appears in the handbook


@dataclass(frozen=True)
class Handbook:
    organisation: str
    name: str
    pages: list[str]


def corpus(seed: int = 17) -> tuple[list[Handbook], list[Question]]:
    rng = random.Random(seed)
    handbooks: list[Handbook] = []
    questions: list[Question] = []
    for i, org in enumerate(ORGANISATIONS):
        values = {
            "org": org,
            "n": rng.randint(20, 35),
            "city": CITIES[i],
            "year": rng.randint(1950, 2015),
            "person": PEOPLE[i],
            "h1": rng.randint(7, 9),
            "h2": rng.randint(17, 21),
            "d": rng.choice([14, 21, 30, 45, 60, 90]),
            "tool": rng.choice(TOOLS),
            "m": rng.choice([3, 5, 10, 15]),
            "g": rng.choice("ABCDEFG") + str(rng.randint(1, 9)),
            "p": rng.randint(20, 90),
            "r": rng.randint(1, 4),
        }
        facts = FACTS[:]
        rng.shuffle(facts)
        pages = []
        for page in range(4):
            paragraphs = []
            for kind, statement, question in facts[page * 2 : page * 2 + 2]:
                answer = statement.format(**values)
                filler = " ".join(rng.sample(FILLER, 3))
                paragraphs += [filler, answer]
                questions.append(Question(org, kind, question.format(**values), answer))
            paragraphs.append(" ".join(rng.sample(FILLER, 3)))
            pages.append(f"{org} staff handbook, part {page + 1}\n\n" + "\n\n".join(paragraphs))
        slug = org.lower().replace(" ", "-")
        handbooks.append(Handbook(org, f"{slug}-handbook.pdf", pages))
    return handbooks, questions
