// Umbrella header: everything in bnorm's public API.
#pragma once

#include "bnorm/batch_norm.hpp"
#include "bnorm/batch_renorm.hpp"
#include "bnorm/communicator.hpp"
#include "bnorm/error.hpp"
#include "bnorm/layer_norm.hpp"
#include "bnorm/group_norm.hpp"
#include "bnorm/instance_norm.hpp"
#include "bnorm/runtime.hpp"
#include "bnorm/rms_norm.hpp"
#include "bnorm/sync_batch_norm.hpp"
#include "bnorm/tensor.hpp"
#include "bnorm/version.hpp"
