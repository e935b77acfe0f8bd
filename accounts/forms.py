"""Input validation for the accounts pages; forms never query the database."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    PasswordField,
    SelectField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional, Regexp
from wtforms.widgets import HiddenInput

from accounts.models import StaffRole
from core.actors import ActorKind
from web.forms import MultiCheckboxField, WholeNumberField
from web.security import MAX_ROW_ID

_EMAIL = [
    DataRequired("Enter your email address."),
    Length(max=320, message="An email address has at most 320 characters."),
    Email("Enter an email address like name@example.org.", check_deliverability=False),
]


class EndSessionForm(FlaskForm):
    """Ending one of one's own sessions (by its row id) or every other one (``others``); the
    page writes ``which`` into each button's form itself."""

    which = StringField(
        validators=[
            DataRequired("Choose a session to end."),
            Regexp(r"^(others|[0-9a-f]{64})$", message="Choose a session to end."),
        ],
    )


class SignInLinkForm(FlaskForm):
    email = EmailField("Email address", validators=_EMAIL)


class ConfirmForm(FlaskForm):
    """A form with only its CSRF token, for buttons that change state."""


class StaffSignInForm(FlaskForm):
    email = EmailField("Email address", validators=_EMAIL)
    password = PasswordField(
        "Password",
        validators=[
            DataRequired("Enter your password."),
            Length(max=1024, message="That password is too long."),
        ],
    )


class RecoveryCodeForm(FlaskForm):
    code = StringField(
        "Recovery code",
        validators=[
            DataRequired("Enter one of your recovery codes, e.g. ABCDE-FGHJK."),
            Length(max=40, message="A recovery code is 11 characters, e.g. ABCDE-FGHJK."),
        ],
    )


_ROLE_CHOICES = [
    SelectChoice(role.value, f"{role.value} — {role.description}") for role in StaffRole
]


class StaffEditForm(FlaskForm):
    name = StringField(
        "Name",
        validators=[
            DataRequired("Enter a name."),
            Length(max=200, message="A name has at most 200 characters."),
        ],
    )
    roles = MultiCheckboxField("Roles", choices=_ROLE_CHOICES)
    active = BooleanField("May sign in", default=True)

    @property
    def selected_roles(self) -> list[StaffRole]:
        return [StaffRole(value) for value in self.roles.data or ()]


class StaffCreateForm(StaffEditForm):
    email = EmailField("Email address", validators=_EMAIL)


class AuditFilterForm(FlaskForm):
    """The audit log's filters: a GET form, so it carries no CSRF token."""

    class Meta:
        csrf = False

    action = StringField("Action starts with", validators=[Optional(), Length(max=100)])
    actor_kind = SelectField(
        "Actor",
        choices=[SelectChoice("", "anyone")] + [SelectChoice(kind.value) for kind in ActorKind],
        validators=[Optional()],
    )
    subject_kind = StringField("Subject kind", validators=[Optional(), Length(max=50)])
    subject_id = StringField("Subject id", validators=[Optional(), Length(max=100)])
    since = DateField("From (UTC)", validators=[Optional()])
    until = DateField("Until (UTC, inclusive)", validators=[Optional()])
    # Bounded like a row id: a larger number names no event and would overflow the query.
    before = WholeNumberField(
        widget=HiddenInput(),
        validators=[
            Optional(),
            NumberRange(
                min=1,
                max=MAX_ROW_ID,
                message="There is no such page of the log. Start again from the newest events.",
            ),
        ],
    )
