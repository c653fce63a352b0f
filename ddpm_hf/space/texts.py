"""What the Space says to a visitor that depends on the chosen model: what its pictures are (digits, garments), how
diffusion makes them, what to draw, and a hint when a chain was run with too few steps."""

from dataclasses import dataclass

from . import limits
from .registry import Model

HEADER = """# Denoising Diffusion Probabilistic Models
[Paper](https://arxiv.org/abs/2006.11239) (Ho, Jain & Abbeel 2020) ·
[the authors' code](https://github.com/hojonathanho/diffusion){code}, on the Hugging Face stack."""
NOUNS = {"mnist": ("digit", "digits"), "fashion-mnist": ("garment", "garments")}  # by built-in dataset
PICTURES = ("picture", "pictures")  # a model trained on other images


@dataclass(frozen=True)
class Subject:
    """What a model draws, in words: "digit" / "digits"."""

    one: str
    many: str

    grey: bool = True  # one-channel pictures, drawn on a black canvas; else colour photos, uploaded

    @classmethod
    def of(cls, model: Model | None) -> "Subject":
        if model is not None and model.paper_model is not None:
            return cls(*model.paper_model.nouns, grey=False)
        grey = model is None or model.channels == 1  # drawn on the black canvas; a photo is uploaded in colour
        return cls(*NOUNS.get(model.dataset if model else None, PICTURES), grey=grey)


def how_it_works(subject: Subject) -> str:
    """The Sample tab's two sentences on diffusion, and what the button does."""
    return (
        f"**How it works:** the model starts from random static and removes a little noise at each step until "
        f"{subject.many} appear. While it runs, the left half of the picture is the picture now and the right half "
        f"the model's current guess of how it will end. Press **Sample** to watch it draw new {subject.many}."
    )


def draw_and_denoise(subject: Subject) -> str:
    """The Your digit tab's instructions (where the model forgets the drawing: measured on digits); for a colour
    model, "your picture": an uploaded photo, resized and centre-cropped (SDEdit)."""
    if not subject.grey:
        return (
            f"Upload a photo (or draw on the canvas); it is resized and centre-cropped to the model's size. Pick how "
            f"much noise to add ($t$), and let the model take the noise away again: a small $t$ keeps your picture "
            f"and redraws its details; with a large $t$ the model forgets it and draws {subject.many} of its own "
            "(SDEdit, Meng et al. 2022)."
        )
    forgets = f"above about $t = {limits.FORGETS_AT}$" if subject.one == NOUNS["mnist"][0] else "with a large $t$"
    return (
        f"Draw a {subject.one} (white on black, like the training images) or upload a picture, pick how much noise to "
        f"add ($t$), and let the model take the noise away again: a small $t$ keeps your {subject.one} and varies its "
        f"style; {forgets} the model forgets it and draws a {subject.one} of its own."
    )


def drawing_label(subject: Subject) -> str:
    """The Your digit tab's name and its canvas's label."""
    if not subject.grey:
        return "Your picture"
    return f"Your {subject.one}" if subject.one != PICTURES[0] else "Your drawing"


def ready_to_sample(model_name: str, subject: Subject) -> str:
    """The Sample tab's status line when a model is chosen and has no result yet."""
    return f"**{model_name}** is ready: press **Sample** to watch it draw {subject.many}."


def example_chosen(seed) -> str:
    """The status line after an example was chosen: its seed is replayed from now on."""
    return (
        f'Example chosen: its seed, {seed}, will be used again on every run ("New seed each run" is off now; tick it '
        "for new pictures). Press **Sample**."
    )


def few_steps_hint(subject: Subject, sampler: str, steps: int) -> str:
    """A hint under a result made with fewer steps than its sampler needs ("" when there were enough)."""
    enough = limits.ENOUGH_STEPS.get(sampler, 0)
    if steps >= enough:
        return ""
    return (
        f"With only {steps} step{'s' * (steps != 1)} this sampler gives a blurred average of many {subject.many}: "
        f"try {enough} steps or more (Advanced: steps and variance)."
    )
