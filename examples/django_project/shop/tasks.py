"""Tasks of the example shop: Django's @task, run by Backstage's prefork worker."""

try:
    from django.tasks import task
except ImportError:  # Django < 6: the django-tasks backport
    from django_tasks import task

from .models import Order


@task(priority=10)  # queue "default" + priority > 0: Backstage's urgent stream
def fulfil_order(order_id: int) -> dict:
    # runs in a prefork child, after the view's transaction committed (enqueue_on_commit)
    order = Order.objects.get(pk=order_id)
    order.fulfilled = True
    order.save(update_fields=["fulfilled"])
    return {"order": order.pk, "customer": order.customer}


@task(queue_name="emails")  # a Backstage custom queue
def send_receipt(order_id: int) -> str:
    return f"receipt for order {order_id}"


@task()
def explode(reason: str) -> None:
    raise ValueError(reason)
