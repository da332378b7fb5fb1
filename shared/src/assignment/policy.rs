//! The assignment policy: which virtual number serves each contact pair of an order. Pure code.
//!
//! Rules (see docs/data-model.md):
//! 1. the numbers a person can dial are distinct across all their live sessions;
//! 2. only `active` numbers of the order's market with the needed capabilities get new contacts;
//! 3. otherwise numbers are shared freely between unrelated orders;
//! 4. load is spread by rendezvous hashing of the pair over the allowed numbers;
//! 5. a contact keeps its number on re-planning, and a party keeps the number it had for a
//!    role whose holder was replaced, while that is still allowed.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::domain::{
    Capabilities, Contact, ContactPolicy, Market, OrderId, Participant, PoolNumber, Session,
    VirtualNumber,
};

/// No number may serve a contact pair: every eligible one is already dialled by one of the two.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pool exhausted in market {market}: {eligible} eligible numbers, a party already holds {live_contacts} live contacts")]
pub struct PoolExhausted {
    pub market: Market,
    pub eligible: usize,
    /// The larger live-contact count of the two parties of the pair that could not be served,
    /// on the market's eligible numbers.
    pub live_contacts: usize,
}

/// Everything the policy needs to plan one order's contacts.
pub struct PlanRequest<'a> {
    pub order_id: &'a OrderId,
    pub market: &'a Market,
    pub participants: &'a [Participant],
    /// The order's session before this change, if any (for rule 5).
    pub previous: Option<&'a Session>,
    /// For each participant (same index), the numbers they can already dial in other live orders.
    pub busy: &'a [HashSet<VirtualNumber>],
    pub pool: &'a [PoolNumber],
    pub contact_policy: &'a ContactPolicy,
    pub needs: Capabilities,
}

/// Plans every contact pair of the order, or says which pair cannot be served.
pub fn plan_contacts(req: &PlanRequest<'_>) -> Result<Vec<Contact>, PoolExhausted> {
    let pairs = req.contact_policy.pairs(req.participants);
    let mut used: Vec<HashSet<VirtualNumber>> = req.busy.to_vec();
    used.resize_with(req.participants.len(), HashSet::new);
    let pool_by_number: HashMap<&VirtualNumber, &PoolNumber> =
        req.pool.iter().map(|v| (&v.number, v)).collect();
    let mut chosen: Vec<Option<&PoolNumber>> = vec![None; pairs.len()];

    // Rule 5 first, so that kept numbers are not taken by other pairs of this order.
    if let Some(previous) = req.previous {
        for (slot, &(i, j)) in pairs.iter().enumerate() {
            let kept = kept_number(req, previous, i, j, &pool_by_number)
                .filter(|vn| !used[i].contains(&vn.number) && !used[j].contains(&vn.number));
            if let Some(vn) = kept {
                used[i].insert(vn.number.clone());
                used[j].insert(vn.number.clone());
                chosen[slot] = Some(vn);
            }
        }
    }

    // The market's bound: only numbers carrying its channels serve, and only contacts on them
    // count against a person.
    let eligible: Vec<&PoolNumber> = req
        .pool
        .iter()
        .filter(|v| v.eligible_for(req.market, req.needs))
        .collect();
    for (slot, &(i, j)) in pairs.iter().enumerate() {
        if chosen[slot].is_some() {
            continue;
        }
        let (a, b) = (&req.participants[i], &req.participants[j]);
        let best = eligible
            .iter()
            .filter(|v| !used[i].contains(&v.number) && !used[j].contains(&v.number))
            .max_by_key(|v| spread_score(req.order_id, a, b, &v.number))
            .copied()
            .ok_or_else(|| {
                let held = |k: usize| {
                    eligible
                        .iter()
                        .filter(|v| used[k].contains(&v.number))
                        .count()
                };
                PoolExhausted {
                    market: req.market.clone(),
                    eligible: eligible.len(),
                    live_contacts: held(i).max(held(j)),
                }
            })?;
        used[i].insert(best.number.clone());
        used[j].insert(best.number.clone());
        chosen[slot] = Some(best);
    }

    Ok(pairs
        .iter()
        .zip(chosen)
        .filter_map(|(&(i, j), vn)| {
            vn.map(|vn| Contact {
                a: req.participants[i].user_id.clone(),
                b: req.participants[j].user_id.clone(),
                number: vn.number.clone(),
                capabilities: vn.capabilities,
                pins: None,
            })
        })
        .collect())
}

/// The number pair (i, j) may keep from the previous session: the same pair's number if it
/// keeps its contacts (active or draining: a quarantined, cooling-off or retired number sees
/// them moved), or the number one party had
/// for the role the other party took over, if that number is still eligible for new contacts.
fn kept_number<'p>(
    req: &PlanRequest<'_>,
    previous: &Session,
    i: usize,
    j: usize,
    pool: &HashMap<&VirtualNumber, &'p PoolNumber>,
) -> Option<&'p PoolNumber> {
    let (a, b) = (&req.participants[i], &req.participants[j]);
    let same_pair = previous
        .contacts
        .iter()
        .find(|c| c.joins(&a.user_id, &b.user_id));
    if let Some(c) = same_pair {
        let vn = pool.get(&c.number).copied()?;
        let usable = vn.state.keeps_contacts()
            && &vn.market == req.market
            && vn.capabilities.contains(req.needs);
        return usable.then_some(vn);
    }
    let still_here = |user| req.participants.iter().any(|p| &p.user_id == user);
    for (stays, joins) in [(a, b), (b, a)] {
        let carried = previous.contacts.iter().find(|c| {
            c.other(&stays.user_id)
                .filter(|other| !still_here(*other))
                .and_then(|other| previous.participant(other))
                .is_some_and(|gone| gone.role == joins.role)
        });
        if let Some(vn) = carried.and_then(|c| pool.get(&c.number).copied()) {
            if vn.eligible_for(req.market, req.needs) {
                return Some(vn);
            }
        }
    }
    None
}

/// Rendezvous (highest random weight) score: each pair ranks the numbers in its own pseudo-random
/// order, so pairs spread evenly over the pool without any shared counter to contend on.
fn spread_score(order: &OrderId, a: &Participant, b: &Participant, number: &VirtualNumber) -> u64 {
    let mut h = DefaultHasher::new();
    order.hash(&mut h);
    a.user_id.hash(&mut h);
    b.user_id.hash(&mut h);
    number.hash(&mut h);
    h.finish()
}
