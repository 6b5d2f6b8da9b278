{#- Rate checks. dbt counts "failures" as an integer, so these report the measured rate in parts
    per million through fail_calc (recorded as a rate by record_quality_results) and compare it
    with the threshold in the same unit: the measured value is kept whether the check passes or
    not. An empty table measures 0. -#}

{% test null_rate(model, column_name, max_rate) %}
{{ config(fail_calc="coalesce(max(measured_ppm), 0)",
          warn_if="> " ~ (max_rate * 1000000) | round | int,
          error_if="> " ~ (max_rate * 1000000) | round | int,
          meta={"unit": "rate_ppm", "threshold": max_rate}) }}
select round(1000000.0 * count(*) filter (where {{ column_name }} is null)
             / greatest(count(*), 1))::bigint as measured_ppm
from {{ model }}
{% endtest %}

{#- Share of rows that repeat an earlier row's key: redeliveries and second loads. -#}
{% test duplicate_rate(model, column_name, max_rate) %}
{{ config(fail_calc="coalesce(max(measured_ppm), 0)",
          warn_if="> " ~ (max_rate * 1000000) | round | int,
          error_if="> " ~ (max_rate * 1000000) | round | int,
          meta={"unit": "rate_ppm", "threshold": max_rate}) }}
select round(1000000.0 * (count(*) - count(distinct {{ column_name }}))
             / greatest(count(*), 1))::bigint as measured_ppm
from {{ model }}
{% endtest %}
