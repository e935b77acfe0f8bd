"""Input validation for the eligibility pages; forms never query the database."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import FloatField, RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from core.countries import all_choices
from web.forms import WholeNumberField


class CountryForm(FlaskForm):
    country = SelectField(
        "Country the keys would be shipped to",
        validators=[DataRequired("Choose a country.")],
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.country.choices = [SelectChoice("", "Choose a country…")] + [
            SelectChoice(code, name) for code, name in all_choices()
        ]


class AppealForm(FlaskForm):
    text = TextAreaField(
        "Why should you be eligible?",
        validators=[
            DataRequired("Tell us why you think you should be eligible."),
            Length(min=20, max=4000, message="Write between 20 and 4,000 characters."),
        ],
    )
    projects = StringField(
        "Projects this is about (optional, separated by commas)",
        validators=[Optional(), Length(max=500, message="List at most 500 characters.")],
    )

    @property
    def project_list(self) -> list[str]:
        return [p.strip() for p in (self.projects.data or "").split(",") if p.strip()]


class ProjectLookupForm(FlaskForm):
    """The public "is this project critical?" box: a GET form, so no CSRF token."""

    class Meta:
        csrf = False

    name = StringField(
        "Project name",
        validators=[DataRequired("Enter a project name."), Length(max=200)],
    )


class AppealDecisionForm(FlaskForm):
    decision = RadioField(
        "Decision",
        choices=[
            SelectChoice("grant", "Grant: count them as eligible"),
            SelectChoice("deny", "Deny"),
        ],
        validators=[InputRequired("Choose grant or deny.")],
    )
    reason = TextAreaField(
        "Reason (the maintainer will read it)",
        validators=[
            DataRequired("Give a reason."),
            Length(min=5, max=2000, message="Write between 5 and 2,000 characters."),
        ],
    )


class DownloadsUploadForm(FlaskForm):
    file = FileField(
        "Statistics file (CSV project,downloads · JSON rows · CSV rank,project)",
        validators=[FileRequired("Choose a file to import.")],
    )
    total_projects = WholeNumberField(
        "Projects on PyPI (needed for a rank,project file)",
        validators=[Optional(), NumberRange(min=1, message="Enter a positive number.")],
    )
    percent = FloatField(
        "Critical top percent (leave empty for the programme's setting)",
        validators=[Optional(), NumberRange(min=0.001, max=100, message="Between 0 and 100.")],
    )
