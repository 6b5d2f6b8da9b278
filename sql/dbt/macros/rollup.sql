{#- An entity (customer, store, product) as running totals over silver.transactions: each build
    adds only the transactions loaded since the model's watermark to the totals it already has,
    so a build costs what arrived, not the whole history. Every column is additive (counts,
    sums, sums of squares, min/max), so adding a batch exactly once gives exact results.
    `sums`: extra {name: expression} summed per entity. -#}
{% macro rollup_entity(key, sums={}) %}
with batch as (
    select
        {{ key }},
        min(event_time) as first_seen_at,
        max(event_time) as last_seen_at,
        count(*) as transactions,
        sum(amount) as amount_total,
        max(amount) as amount_max
        {%- for name, expression in sums.items() %},
        coalesce(sum({{ expression }}), 0) as {{ name }}
        {%- endfor %}
    from {{ ref('transactions') }}
    where {{ key }} is not null
    {% if is_incremental() %}
      and {{ since_watermark() }}
    {% endif %}
    group by {{ key }}
)

select
    b.{{ key }},
    {% if is_incremental() -%}
    least(o.first_seen_at, b.first_seen_at) as first_seen_at,
    greatest(o.last_seen_at, b.last_seen_at) as last_seen_at,
    coalesce(o.transactions, 0) + b.transactions as transactions,
    coalesce(o.amount_total, 0) + b.amount_total as amount_total,
    greatest(o.amount_max, b.amount_max) as amount_max,
    {%- for name in sums %}
    coalesce(o.{{ name }}, 0) + b.{{ name }} as {{ name }},
    {%- endfor %}
    {%- else -%}
    b.first_seen_at,
    b.last_seen_at,
    b.transactions,
    b.amount_total,
    b.amount_max,
    {%- for name in sums %}
    b.{{ name }},
    {%- endfor %}
    {%- endif %}
    now() as _loaded_at
from batch as b
{% if is_incremental() %}
left join {{ this }} as o on o.{{ key }} = b.{{ key }}
{% endif %}
{% endmacro %}
