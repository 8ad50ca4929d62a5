from django.urls import path, register_converter

from . import converters, views

register_converter(converters.ApiIdConverter, "apiid")
register_converter(converters.RequestIdConverter, "requestid")
batch = "batches/<slug:slug>/<apiid:batch_id>/"

urlpatterns = [
    path("", views.batch_list, name="batch-list"),
    path(batch, views.batch_detail, name="batch-detail"),
    path(batch + "files/", views.batch_files, name="batch-files"),
    path(batch + "files/<str:kind>/", views.batch_download, name="batch-download"),
    path(batch + "cancel/", views.batch_cancel, name="batch-cancel"),
    path(batch + "refresh/", views.batch_refresh, name="batch-refresh"),
    path(batch + "retry/", views.batch_retry, name="batch-retry"),
    path(batch + "retry/file/", views.batch_retry_file, name="batch-retry-file"),
    path(batch + "lineage/", views.batch_lineage, name="batch-lineage"),
    path(batch + "lineage/results/<str:kind>/", views.batch_merged_results, name="batch-merged-results"),
    path("batches/new/", views.batch_new, name="batch-new"),
    path(batch + "requests/", views.request_list, name="batch-requests"),
    # "export.csv" is no request's segment: a custom_id with a "." is written in base64 (converters.py)
    path(batch + "requests/export.<str:kind>", views.request_export, name="batch-requests-export"),
    path(batch + "requests/<requestid:custom_id>/", views.request_detail, name="batch-request"),
    path("healthz", views.healthz, name="healthz"),
    path("webhooks/openai/<slug:slug>/", views.openai_webhook, name="openai-webhook"),
    path("metrics", views.metrics, name="metrics"),
]
