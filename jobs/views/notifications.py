"""Portal page of the signed-in user's e-mail notifications: failures of any job, the daily summary, the
address, and a test e-mail that says in words why it could not be sent."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core.rbac import VIEW
from core.views import role_required
from inventory.forms import css_class
from jobs.models import NotificationSettings
from jobs.notifications import MailError, send_test_mail, settings_of


class NotificationSettingsForm(forms.ModelForm):
    class Meta:
        model = NotificationSettings
        fields = ["email", "on_failure", "daily_summary"]
        labels = {"email": "Send to", "on_failure": "E-mail me when any job's run fails or partly fails",
                  "daily_summary": "E-mail me a daily summary of the last 24 hours (at 07:00)"}
        error_messages = {"email": {"invalid": "Enter an e-mail address such as ops@example.com, or leave it empty "
                                               "to use your account's address."}}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        account = self.instance.user.email
        self.fields["email"].help_text = (f"Empty: your account's address ({account})." if account else
                                          "Your account has no e-mail address: enter one here.")
        self.fields["email"].widget.attrs["placeholder"] = account
        for field in self.fields.values():
            field.widget.attrs["class"] = css_class(field.widget)

    def clean(self) -> dict:
        data = super().clean()
        chosen = data.get("on_failure") or data.get("daily_summary")
        if chosen and not data.get("email") and not self.instance.user.email and "email" not in self.errors:
            self.add_error("email", "Enter the address to send to: your account has no e-mail address.")
        return data


@role_required(VIEW)
def notification_settings(request: HttpRequest) -> HttpResponse:
    current = settings_of(request.user)
    form = NotificationSettingsForm(request.POST or None, instance=current)
    if request.method == "POST" and form.is_valid():
        if request.POST.get("action") == "test":
            # The address as entered, so it can be tried before it is saved.
            address = form.cleaned_data.get("email") or request.user.email
            try:
                messages.success(request, send_test_mail(address))
            except MailError as exc:
                messages.error(request, str(exc))
        else:
            form.save()
            messages.success(request, "Your notification settings were saved.")
            return redirect("jobs:notification_settings")
    file_path = settings.EMAIL_FILE_PATH if settings.EMAIL_BACKEND.endswith("filebased.EmailBackend") else None
    context = {"form": form, "settings": current, "file_path": file_path,
               "server": f"{settings.EMAIL_HOST}:{settings.EMAIL_PORT}"}
    return render(request, "jobs/notification_settings.html", context)
