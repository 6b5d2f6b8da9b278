-- Per store and UTC hour. Each build recomputes, from the fact table, exactly the (store, hour)
-- pairs that received a transaction or an alert since the last build: a late event lands in its
-- own hour, and running twice changes nothing. Columns are a fixed interface.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['store_id', 'hour_start'],
    indexes=[{'columns': ['store_id', 'hour_start'], 'unique': True}, {'columns': ['hour_start']}],
    post_hook="{{ advance_watermark([ref('transactions'), ref('fraud_alerts')]) }}",
) }}

{% if is_incremental() %}
with touched as (
    select distinct store_id, date_trunc('hour', event_time, 'UTC') as hour_start
    from (
        select store_id, event_time from {{ ref('transactions') }} where _loaded_at > {{ watermark() }}
        union all
        select store_id, event_time from {{ ref('fraud_alerts') }} where _loaded_at > {{ watermark() }}
    ) as arrived
)
{% endif %}

select
    f.store_id,
    {% if is_incremental() %}h.hour_start{% else %}date_trunc('hour', f.event_time, 'UTC'){% endif %} as hour_start,
    count(*) as transactions,
    sum(f.amount) as amount_total,
    round(avg(f.amount), 2) as amount_avg,
    count(*) filter (where f.is_alert) as alerts
from {{ ref('fact_transactions') }} as f
{% if is_incremental() %}
join touched as h
  on f.store_id = h.store_id
 and f.event_time >= h.hour_start and f.event_time < h.hour_start + interval '1 hour'
{% endif %}
group by 1, 2
