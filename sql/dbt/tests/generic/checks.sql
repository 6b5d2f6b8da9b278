{#- Row checks: each returns the offending rows (dbt counts them). -#}

{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}
select {{ column_name }} from {{ model }}
where {{ column_name }} is not null and not (
    {%- if min_value is not none %} {{ column_name }} {{ '>=' if inclusive else '>' }} {{ min_value }}{% endif %}
    {%- if min_value is not none and max_value is not none %} and{% endif %}
    {%- if max_value is not none %} {{ column_name }} {{ '<=' if inclusive else '<' }} {{ max_value }}{% endif %}
)
{% endtest %}

{% test matches_pattern(model, column_name, pattern) %}
select {{ column_name }} from {{ model }}
where {{ column_name }} is not null and {{ column_name }} !~ '{{ pattern }}'
{% endtest %}

{% test expression_is_true(model, expression, column_name=none) %}
select * from {{ model }} where not ({{ expression }})
{% endtest %}

{#- The event happened before it was loaded (give or take the allowed clock skew). -#}
{% test not_in_future(model, column_name, loaded_column) %}
select {{ column_name }} from {{ model }}
where {{ column_name }} > {{ loaded_column }} + interval '{{ var("max_clock_skew") }}'
{% endtest %}

{#- Freshness as a data test, so it runs inside `dbt build` (no second dbt invocation): the age
    of the newest row in seconds is the measured value; an empty table counts as stale. -#}
{% test fresh_within(model, column_name, hours) %}
{{ config(severity="warn",
          fail_calc="coalesce(max(age_seconds), 0)",
          warn_if="> " ~ (hours * 3600) | int,
          error_if="> " ~ (hours * 3600) | int,
          meta={"unit": "seconds", "threshold": hours * 3600}) }}
select coalesce(extract(epoch from now() - max({{ column_name }})), 1e9)::bigint as age_seconds
from {{ model }}
{% endtest %}
