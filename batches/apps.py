from django.apps import AppConfig


class BatchesConfig(AppConfig):
    name = "batches"
    verbose_name = "Batches"

    def ready(self):
        from django.contrib.auth import signals

        from . import audit

        signals.user_logged_in.connect(audit.logged_in, dispatch_uid="batches.audit.logged_in")
        signals.user_login_failed.connect(audit.login_failed, dispatch_uid="batches.audit.login_failed")
        signals.user_logged_out.connect(audit.logged_out, dispatch_uid="batches.audit.logged_out")
