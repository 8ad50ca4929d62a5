from django.core.management.base import BaseCommand

from notifications import events, outbox


class Command(BaseCommand):
    help = "Derive time-based events, fan out waiting events and send the deliveries due, once (what beat runs)."

    def handle(self, *args, **options):
        created = events.derive_events()
        done = outbox.run_outbox()
        self.stdout.write(f"{created} events derived, {done['events']} fanned out, "
                          f"{done['sent']} of {done['attempted']} deliveries sent")
