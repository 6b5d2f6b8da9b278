-- ArgoCD health of a FraudPipeline (streamflow.dev/v1alpha1), from the kstatus conditions the
-- operator writes. Install: argocd-cm resource.customizations.health.streamflow.dev_FraudPipeline
-- (see config/argocd/README.md). ArgoCD runs this with the object as `obj` (Lua 5.1).
--   Healthy      Ready=True and the status is about the current generation
--   Suspended    spec.suspend and the jobs are stopped (phase Suspended)
--   Degraded     Stalled=True: a conflict, a rejected child, an invalid spec or model; the
--                operator keeps the last good configuration running and says why
--   Progressing  anything else: not observed yet, reconciling, upgrading, terminating
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the pipeline"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "The pipeline is stalled")
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  if status.phase == "Suspended" then
    hs.status = "Suspended"
    hs.message = text(ready, "The pipeline is suspended: its jobs are stopped with a savepoint")
    return hs
  end
  hs.status = "Healthy"
  hs.message = text(ready, "All children are ready")
  return hs
end

if status.phase == "Terminating" then
  hs.status = "Progressing"
  hs.message = text(ready, "The pipeline is being deleted")
  return hs
end

local reconciling = condition(status, "Reconciling")
hs.status = "Progressing"
hs.message = text(reconciling, text(ready, "The pipeline is reconciling"))
return hs
