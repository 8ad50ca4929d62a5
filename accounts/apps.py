from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.contrib.auth.signals import user_logged_in

        from .sessions import start_session

        user_logged_in.connect(start_session, dispatch_uid="accounts.start_session")
