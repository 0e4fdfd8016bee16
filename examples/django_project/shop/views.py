from django.db import transaction
from django.http import HttpRequest, JsonResponse

from backstage.contrib.django import enqueue_on_commit

from .models import Order
from .tasks import fulfil_order


def create_order(request: HttpRequest) -> JsonResponse:
    """POST customer=…: create the order and its fulfilment job in one transaction."""
    try:
        with transaction.atomic():
            order = Order.objects.create(customer=request.POST["customer"])
            pending = enqueue_on_commit(fulfil_order, order.pk)  # sent only if the transaction commits
            if request.POST.get("declined"):
                raise ValueError("payment declined")
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=402)
    return JsonResponse({"order": order.pk, "result_id": pending.result.id}, status=201)


def order_status(request: HttpRequest, result_id: str) -> JsonResponse:
    """The fulfilment job's status and return value, read through Django's Tasks API."""
    result = fulfil_order.get_result(result_id)
    body = {"status": str(result.status), "attempts": result.attempts}
    if result.is_finished and not result.errors:
        body["return_value"] = result.return_value
    return JsonResponse(body)
