-- The feature store: one row per customer, what a model can learn a customer's habits from,
-- with the alerts raised and the verdicts confirmed for them. Derived from running totals, so
-- rebuilding it whole stays cheap (one row per customer).
{{ config(materialized='table', indexes=[{'columns': ['customer_id'], 'unique': True}]) }}

with alerts as (
    select customer_id, count(*) as alerts, max(event_time) as last_alert_at
    from {{ ref('fraud_alerts') }}
    group by customer_id
),

verdicts as (
    select
        t.customer_id,
        count(*) filter (where f.is_fraud) as confirmed_fraud,
        count(*) filter (where not f.is_fraud) as confirmed_legit
    from {{ ref('feedback') }} as f
    join {{ ref('transactions') }} as t on t.transaction_id = f.transaction_id
    group by t.customer_id
),

moments as (
    select
        c.*,
        c.amount_total / c.transactions as amount_mean,
        greatest(c.amount_squares_total / c.transactions - (c.amount_total / c.transactions) ^ 2, 0)
            as amount_variance,
        sqrt(c.hour_sin_total ^ 2 + c.hour_cos_total ^ 2) / c.transactions as hour_concentration
    from {{ ref('customers') }} as c
)

select
    m.customer_id,
    m.transactions,
    round(m.amount_mean, 2) as amount_mean,
    round(sqrt(m.amount_variance)::numeric, 2) as amount_std,
    m.amount_max,
    -- Circular mean of the UTC hour of day; null when the hours cancel out (no usual hour).
    case when m.hour_concentration > 1e-9 then
        round(((degrees(atan2(m.hour_sin_total, m.hour_cos_total)) / 15 + 24)::numeric % 24), 2)
    end as usual_hour_utc,
    round(m.hour_concentration::numeric, 4) as hour_concentration,
    m.first_seen_at,
    m.last_seen_at,
    round((extract(epoch from m.last_seen_at - m.first_seen_at) / 86400)::numeric, 2) as active_days,
    coalesce(a.alerts, 0) as alerts,
    round(coalesce(a.alerts, 0)::numeric / m.transactions, 4) as alert_rate,
    a.last_alert_at,
    coalesce(v.confirmed_fraud, 0) as confirmed_fraud,
    coalesce(v.confirmed_legit, 0) as confirmed_legit
from moments as m
left join alerts as a on a.customer_id = m.customer_id
left join verdicts as v on v.customer_id = m.customer_id
