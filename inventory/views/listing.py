"""One way to show a list: FilterSet, a whitelisted sort, pagination, and an htmx partial of the rows.

The whole page and the partial come from the same URL, so the query string in the address bar
(pushed by htmx) always reproduces what is shown: links, reloads and the back button work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers

PAGE_SIZES = (25, 50, 100, 200)
RESULTS_ID = "results"


@dataclass
class ListSpec:
    template: str  # the whole page; it includes `rows_template`
    rows_template: str  # the partial swapped into #results
    filterset_class: type
    sorts: dict[str, tuple[str, ...]]  # public sort key -> order_by fields
    default_sort: str = "name"
    page_size: int = 50
    context: dict = field(default_factory=dict)


def render_list(request: HttpRequest, spec: ListSpec, queryset: QuerySet, **context) -> HttpResponse:
    filterset = spec.filterset_class(request.GET or None, queryset=queryset, request=request)
    rows = filterset.qs if filterset.is_bound else queryset
    sort = request.GET.get("sort", spec.default_sort)
    if sort.lstrip("-") not in spec.sorts:
        sort = spec.default_sort
    descending = sort.startswith("-")
    order = [f"-{f}" if descending else f for f in spec.sorts[sort.lstrip("-")]]
    rows = rows.order_by(*order, "-pk" if descending else "pk")  # pk keeps pages stable
    try:
        page_size = int(request.GET.get("per_page", spec.page_size))
    except ValueError:
        page_size = spec.page_size
    if page_size not in PAGE_SIZES:
        page_size = spec.page_size
    page = Paginator(rows, page_size).get_page(request.GET.get("page"))
    context.update(
        spec.context,
        page=page,
        rows=page.object_list,
        rows_template=spec.rows_template,
        sort=sort,
        per_page=page_size,
        page_sizes=PAGE_SIZES,
        filter_errors=_filter_errors(filterset),
        params=request.GET,
        filtered=any(v for k, v in request.GET.items() if k not in ("sort", "page", "per_page")),
    )
    partial = request.htmx and request.htmx.target == RESULTS_ID and not request.htmx.history_restore_request
    response = render(request, spec.rows_template if partial else spec.template, context)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


def _filter_errors(filterset) -> list[str]:
    if not filterset.is_bound or filterset.is_valid():
        return []
    messages = []
    for name, errors in filterset.errors.items():
        label = filterset.filters[name].label or name if name in filterset.filters else name
        messages.extend(f"Filter “{label}” was ignored: {error}" for error in errors)
    return messages


def count_of(model, link: str, **filters) -> Coalesce:
    """Annotation: how many `model` rows point at the outer row through `link`.

    A correlated subquery per counted relation: several Count() joins in one query would multiply rows.
    """
    counted = (
        model.objects.filter(**{link: OuterRef("pk")}, **filters)
        .order_by()
        .values(link)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def narrowing(request: HttpRequest, linked: tuple[tuple[str, type, str], ...]) -> list[tuple[str, str, str, str]]:
    """Filters set by links from other pages, as chips: (parameter, value, label, object name)."""
    chips = []
    for param, model, label in linked:
        value = request.GET.get(param, "")
        if value.isdigit():
            name = model.objects.filter(pk=value).values_list("name", flat=True).first() or f"#{value} (not found)"
            chips.append((param, value, label, name))
    return chips
