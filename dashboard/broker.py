"""The embedded broker (`sqla+sqlite://`, the default): kombu's SQLAlchemy transport, polled ten times a second.

kombu's virtual transports look for new messages once a second (`polling_interval`), and the SQLAlchemy one
passes every transport option on to `create_engine`, so the interval cannot be set as an option. A refresh queued
by an OpenAI webhook would wait up to that second before a worker sees it. Each poll is one SELECT per queue on
a local file, so ten a second cost little. Redis and RabbitMQ push messages and are not affected.
"""

from kombu.transport import sqlalchemy


class Transport(sqlalchemy.Transport):
    polling_interval = 0.1
