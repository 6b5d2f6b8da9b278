-- Products as running totals (transactions without a product_id are not counted here).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='product_id',
    indexes=[{'columns': ['product_id'], 'unique': True}],
    post_hook="{{ advance_watermark([ref('transactions')]) }}",
) }}

{{ rollup_entity('product_id') }}
